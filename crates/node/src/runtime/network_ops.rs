//! Docker's `network connect` and `disconnect`. A VM's one network interface is fixed once it
//! has started, but a container that has never started has no VM yet: its endpoint is only a
//! record, so it may leave its network and join another (docker-compose v1 reconnects each
//! container it creates, to set its aliases, before starting it).

use super::*;

impl Runtime {
    /// Takes a container that has never started off its network.
    pub async fn disconnect_created(&self, tenant: &str, reference: &str) -> Result<()> {
        let entry = self.entry(tenant, reference)?;
        let c = entry.snapshot();
        never_started(
            &c,
            "keep their network interface for life: remove it instead",
        )?;
        let gone = c.clone();
        self.with_networks(move |n| n.release_endpoint(&gone))
            .await?;
        self.update(&entry, |c| c.endpoint = None)?;
        Ok(())
    }

    /// Puts a container that has never started, and has no network, on `network` with
    /// `aliases` and `links` (Docker's EndpointSettings).
    pub async fn connect_created(
        &self,
        tenant: &str,
        reference: &str,
        network: &str,
        aliases: Vec<String>,
        links: Vec<String>,
    ) -> Result<()> {
        let entry = self.entry(tenant, reference)?;
        let mut c = entry.snapshot();
        never_started(
            &c,
            "have one network interface, chosen before they start: recreate it on this network",
        )?;
        if c.endpoint.is_some() {
            return Err(RuntimeError::Unsupported(format!(
                "hyper containers have one network interface: disconnect {} from its network first",
                c.name
            )));
        }
        c.host_config.network_mode = network.to_string();
        for link in links {
            if !c.host_config.links.contains(&link) {
                c.host_config.links.push(link);
            }
        }
        let planned = c.clone();
        let endpoint = self
            .with_networks(move |n| {
                let ep = n.plan_endpoint(&planned, aliases)?;
                let planned = Container {
                    endpoint: ep.clone(),
                    ..planned
                };
                if let Err(e) = n.check_links(&planned) {
                    n.release_endpoint(&planned)?;
                    return Err(e);
                }
                Ok(ep)
            })
            .await?;
        self.update(&entry, |now| {
            now.host_config = c.host_config;
            now.endpoint = endpoint;
        })?;
        Ok(())
    }
}

/// Refuses, as `what` says, for a container that has run: its VM's interface is fixed.
fn never_started(c: &Container, what: &str) -> Result<()> {
    if c.state.status == Status::Created && c.state.started_at.is_none() {
        Ok(())
    } else {
        Err(RuntimeError::Unsupported(format!(
            "hyper containers {what} ({} has started)",
            c.name
        )))
    }
}
