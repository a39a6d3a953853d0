//! What each container of a service is created with: a Docker create body (so the ordinary
//! create's checks apply), with libcompose's labels, Hyper's size, security group and
//! noauto_volume labels, the project's network and alias, links to the linked services'
//! containers and the project's volume names.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::spec::{
    Service, COMPOSE_VERSION, HASH_LABEL, NUMBER_LABEL, ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL,
    VERSION_LABEL,
};

/// What one container of a service is created with: Docker's create body.
pub struct Placement<'a> {
    pub project: &'a str,
    pub network: &'a str,
    pub number: u32,
    /// The project's volume names (`data` -> `shop_data`).
    pub volume_names: &'a BTreeMap<String, String>,
    /// The container each linked service is reached at.
    pub link_targets: &'a BTreeMap<String, String>,
    /// Anonymous volumes of the container this one replaces: `(volume, destination)`.
    pub kept_volumes: &'a [(String, String)],
}

impl Service {
    pub fn container_name(&self, project: &str, number: u32) -> String {
        match &self.container_name {
            Some(n) => n.clone(),
            None => format!("{project}-{}-{number}", self.name),
        }
    }

    pub fn create_body(&self, at: &Placement) -> Value {
        let mut labels = self.labels.clone();
        labels.insert(PROJECT_LABEL.into(), at.project.into());
        labels.insert(SERVICE_LABEL.into(), self.name.clone());
        labels.insert(HASH_LABEL.into(), self.hash.clone());
        labels.insert(ONEOFF_LABEL.into(), "False".into());
        labels.insert(NUMBER_LABEL.into(), at.number.to_string());
        labels.insert(VERSION_LABEL.into(), COMPOSE_VERSION.into());
        if let Some(size) = &self.size {
            labels.insert(node::sizes::SIZE_LABEL.into(), size.clone());
        }
        for g in &self.security_groups {
            labels.insert(
                format!("{}{g}", node::network::sg::LABEL_PREFIX),
                "yes".into(),
            );
        }
        if self.noauto_volume {
            labels.insert(node::volumes::request::NOAUTO_LABEL.into(), "true".into());
        }
        let mut exposed = Map::new();
        let mut bindings: Map<String, Value> = Map::new();
        for e in &self.expose {
            exposed.insert(e.clone(), json!({}));
        }
        for p in &self.ports {
            let key = format!("{}/{}", p.container_port, p.proto);
            exposed.insert(key.clone(), json!({}));
            let b = json!({"HostIp": p.host_ip, "HostPort": p.host_port.map(|h| h.to_string()).unwrap_or_default()});
            match bindings.get_mut(&key) {
                Some(Value::Array(a)) => a.push(b),
                _ => {
                    bindings.insert(key, json!([b]));
                }
            }
        }
        let mut binds: Vec<String> = self
            .named_volumes
            .iter()
            .map(|(vol, dest, ro)| {
                let real = at.volume_names.get(vol).unwrap_or(vol);
                format!("{real}:{dest}{}", if *ro { ":ro" } else { "" })
            })
            .collect();
        let mut anonymous = Map::new();
        for dest in &self.anonymous_volumes {
            match at.kept_volumes.iter().find(|(_, d)| d == dest) {
                Some((vol, _)) => binds.push(format!("{vol}:{dest}")),
                None => {
                    anonymous.insert(dest.clone(), json!({}));
                }
            }
        }
        // The image's own VOLUMEs the old container had, kept too.
        for (vol, dest) in at.kept_volumes {
            if !binds
                .iter()
                .any(|b| b.split(':').nth(1) == Some(dest.as_str()))
            {
                binds.push(format!("{vol}:{dest}"));
            }
        }
        let links: Vec<String> = self
            .links
            .iter()
            .filter_map(|(svc, alias)| {
                at.link_targets
                    .get(svc)
                    .map(|target| format!("{target}:{alias}"))
            })
            .collect();
        let mut body = json!({
            "Image": self.image,
            "Env": self.environment,
            "Labels": labels,
            "WorkingDir": self.working_dir,
            "Tty": self.tty,
            "OpenStdin": self.stdin_open,
            "AttachStdin": false,
            "Hostname": self.hostname,
            "Domainname": self.domainname,
            "ExposedPorts": exposed,
            "Volumes": anonymous,
            "HostConfig": {
                "Binds": binds,
                "Links": links,
                "PortBindings": bindings,
                "NetworkMode": at.network,
            },
            "NetworkingConfig": {"EndpointsConfig": {at.network: {"Aliases": [self.name]}}},
        });
        if let Some(c) = &self.command {
            body["Cmd"] = json!(c);
        }
        if let Some(e) = &self.entrypoint {
            body["Entrypoint"] = json!(e);
        }
        if let Some(r) = &self.restart {
            body["HostConfig"]["RestartPolicy"] = r.clone();
        }
        if let Some(h) = &self.healthcheck {
            body["Healthcheck"] = h.clone();
        }
        body
    }
}
