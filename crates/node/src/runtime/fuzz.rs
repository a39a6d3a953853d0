//! Fuzz target for the checks a container create goes through before anything is made
//! (`Runtime::create`, in its order), on request bodies as a tenant can send them (proptest on
//! stable, see `scripts/fuzz`; the generators are in `fuzz_inputs`). The network's checks are
//! fuzzed in `network/fuzz.rs`.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{command, health, merge_image_defaults, restart, PROTECTION_LABEL};
use crate::fuzz_inputs::{create_body, parsed, word};
use crate::volumes::request;
use crate::{sizes, validate, RuntimeError};

/// A refusal is the tenant's to fix (a 4xx, or 501 for what hyper does not do), and says what.
fn client_error(e: &RuntimeError) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(e, RuntimeError::Invalid(m) | RuntimeError::Unsupported(m) if !m.is_empty()),
        "not a client error: {e:?}"
    );
    Ok(())
}

/// `Runtime::create`'s checks, up to the image and the store; `Err` is the first refusal.
fn create_checks(
    name: &str,
    config: &mut crate::model::ContainerConfig,
    host_config: &crate::model::HostConfig,
    image_config: &Value,
) -> Result<(), RuntimeError> {
    if !name.is_empty() {
        validate::container_name(name)?;
    }
    validate::env(&config.env)?;
    if let Some(v) = config.labels.get(PROTECTION_LABEL) {
        if !matches!(v.as_str(), "true" | "false") {
            return Err(RuntimeError::Invalid(format!(
                "invalid {PROTECTION_LABEL}={v:?}"
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
    let (path, args) = command(config, image_config)?;
    merge_image_defaults(config, image_config);
    if let Some(check) = &config.healthcheck {
        health::validate(check)?;
    }
    let argv: Vec<String> = std::iter::once(path).chain(args).collect();
    validate::process(
        &argv,
        &config.env,
        &config.working_dir,
        &config.user,
        &[
            ("hostname", &config.hostname),
            ("domain name", &config.domainname),
        ],
    )?;
    let anonymous: Vec<String> = config.volumes.keys().cloned().collect();
    request::collect(
        &host_config.binds,
        &host_config.mounts,
        Vec::new(),
        &anonymous,
        &[],
        false,
    )?;
    for spec in &host_config.volumes_from {
        request::parse_volumes_from(spec)?;
    }
    Ok(())
}

fn image_config() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (prop::collection::vec(word(), 0..3), prop::collection::vec(word(), 0..3), prop::collection::vec(word(), 0..3))
            .prop_map(|(cmd, ep, env)| json!({"Cmd": cmd, "Entrypoint": ep, "Env": env, "WorkingDir": "/w", "User": "u"})),
    ]
}

proptest! {
    /// Every create body either passes the checks or is refused as the tenant's error with a
    /// message; what passes holds no NUL where the guest needs C strings, and its volumes
    /// are at distinct, normalised paths.
    #[test]
    fn fuzz_create_checks(body in create_body(), name in prop_oneof![Just(String::new()), word()], image in image_config()) {
        let Some((mut config, host_config)) = parsed(&body) else {
            return Ok(());
        };
        match create_checks(&name, &mut config, &host_config, &image) {
            Err(e) => client_error(&e)?,
            Ok(()) => {
                prop_assert!(config.env.iter().all(|e| !e.contains('\0')));
                let anonymous: Vec<String> = config.volumes.keys().cloned().collect();
                let wanted = request::collect(&host_config.binds, &host_config.mounts, Vec::new(), &anonymous, &[], false).unwrap();
                prop_assert!(wanted.len() <= request::MAX_PER_CONTAINER);
                for (i, w) in wanted.iter().enumerate() {
                    prop_assert_eq!(request::check_destination(&w.destination).unwrap(), w.destination.clone());
                    prop_assert!(wanted[..i].iter().all(|o| o.destination != w.destination));
                    if let Some(n) = &w.name {
                        prop_assert!(request::valid_name(n));
                    }
                }
            }
        }
    }

    /// The string checks alone, on any text: names, signals, volume paths and binds.
    #[test]
    fn fuzz_name_checks(s in prop_oneof![word(), ".{0,140}", "[a-zA-Z0-9_.-]{0,140}"]) {
        match validate::container_name(&s) {
            Ok(n) => prop_assert!(n.len() >= 2 && n.len() <= 128 && n.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))),
            Err(e) => client_error(&e)?,
        }
        if let Err(e) = validate::network_name(&s) {
            client_error(&e)?;
        }
        match validate::signal(&s) {
            Ok(n) => prop_assert!((1..=64).contains(&n)),
            Err(e) => client_error(&e)?,
        }
        match request::check_destination(&s) {
            Ok(d) => {
                prop_assert!(d.starts_with('/') && d != "/" && !d.contains("//") && !d.ends_with('/'));
                prop_assert!(d.split('/').all(|p| p != ".." && p != "."));
                prop_assert_eq!(request::check_destination(&d).unwrap(), d);
            }
            Err(e) => client_error(&e)?,
        }
        match request::parse_bind(&s) {
            Ok(w) => prop_assert!(w.name.as_deref().is_some_and(request::valid_name)),
            Err(e) => client_error(&e)?,
        }
        if let Err(e) = sizes::lookup(&s) {
            client_error(&e)?;
        }
    }

    /// Memory and CPU asks map to a size that holds them, or are refused.
    #[test]
    fn fuzz_sizes(memory in prop_oneof![any::<u64>(), 0u64..(1 << 36)], nano_cpus in prop_oneof![any::<u64>(), 0u64..64_000_000_000]) {
        match sizes::smallest_holding(memory, nano_cpus) {
            Ok(size) => {
                prop_assert!(size.memory_mib.saturating_mul(1 << 20) >= memory);
                prop_assert!(u64::from(size.vcpus).saturating_mul(1_000_000_000) >= nano_cpus);
            }
            Err(e) => client_error(&e)?,
        }
    }
}
