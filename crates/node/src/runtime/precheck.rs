//! The checks of [`Runtime::create`] that need no container yet, for requests that keep a
//! container spec to create it later (a cron's runs): refused when the spec is recorded, not
//! at every run.

use super::health;
use super::{command, merge_image_defaults, restart, Runtime, PROTECTION_LABEL};
use crate::model::{ContainerConfig, HostConfig};
use crate::{sizes, validate, Result, RuntimeError};

impl Runtime {
    /// What `create` would refuse in this spec before it allocates anything: environment,
    /// labels, size, restart policy, stop signal, the tenant's image, the resulting command,
    /// health check and security groups.
    pub fn check_create(
        &self,
        tenant: &str,
        config: &ContainerConfig,
        host_config: &HostConfig,
    ) -> Result<()> {
        validate::env(&config.env)?;
        if let Some(v) = config.labels.get(PROTECTION_LABEL) {
            if !matches!(v.as_str(), "true" | "false") {
                return Err(RuntimeError::Invalid(format!(
                    "invalid {PROTECTION_LABEL}={v:?}: use true or false"
                )));
            }
        }
        if let Some(size) = config.labels.get(sizes::SIZE_LABEL) {
            sizes::lookup(size)?;
        }
        restart::check_policy(host_config)?;
        if let Some(sig) = &config.stop_signal {
            validate::signal(sig)?;
        }
        let view = self.images.resolve(tenant, &config.image)?;
        let image_config = view
            .info
            .config
            .get("config")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let (path, args) = command(config, &image_config)?;
        let mut merged = config.clone();
        merge_image_defaults(&mut merged, &image_config);
        if let Some(check) = &merged.healthcheck {
            health::validate(check)?;
        }
        let argv: Vec<String> = std::iter::once(path).chain(args).collect();
        validate::process(
            &argv,
            &merged.env,
            &merged.working_dir,
            &merged.user,
            &[
                ("hostname", &merged.hostname),
                ("domain name", &merged.domainname),
            ],
        )?;
        let prefix = crate::network::sg::LABEL_PREFIX;
        for (label, value) in &config.labels {
            if let Some(group) = label.strip_prefix(prefix) {
                if value != "no" && value != "false" {
                    crate::network::sg::get(self.store().as_ref(), tenant, group)?;
                }
            }
        }
        Ok(())
    }
}
