//! The event stream: what happened to a tenant's containers, in Docker's event shape, from
//! observed state (a process that exits on its own is a `die` as much as a `docker stop` is).
//! The last `window` events per tenant are kept so a client that reconnects with `since` misses
//! nothing within it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::model::Container;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// Docker's event message (both the old `status/id/from` fields and the newer ones).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub status: String,
    pub id: String,
    pub from: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

impl Event {
    /// A container event; the container's labels, image and name are its attributes.
    pub fn container(c: &Container, action: &str, extra: &[(&str, String)]) -> Self {
        let mut attributes: BTreeMap<String, String> =
            c.config.labels.clone().into_iter().collect();
        attributes.insert("image".into(), c.image.clone());
        attributes.insert("name".into(), c.name.clone());
        for (k, v) in extra {
            attributes.insert((*k).into(), v.clone());
        }
        let now = Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or(0);
        Self {
            kind: "container".into(),
            action: action.into(),
            actor: Actor {
                id: c.id.clone(),
                attributes,
            },
            scope: "local".into(),
            status: action.into(),
            id: c.id.clone(),
            from: c.image.clone(),
            time: now.timestamp(),
            time_nano: nanos,
        }
    }
}

impl Event {
    /// A service event (scale, heal, update, create, remove): the service's name is its id.
    pub fn service(name: &str, image: &str, action: &str, extra: &[(&str, String)]) -> Self {
        let mut attributes: BTreeMap<String, String> = BTreeMap::new();
        attributes.insert("name".into(), name.into());
        attributes.insert("image".into(), image.into());
        for (k, v) in extra {
            attributes.insert((*k).into(), v.clone());
        }
        Self::named("service", name, image, action, attributes)
    }

    /// A volume event (`create`, `destroy`), as Docker's: the volume's name is its id.
    pub fn volume(name: &str, driver: &str, action: &str) -> Self {
        let attributes = BTreeMap::from([("driver".to_string(), driver.to_string())]);
        Self::named("volume", name, "", action, attributes)
    }

    /// An event of an object known by its name.
    fn named(
        kind: &str,
        name: &str,
        from: &str,
        action: &str,
        attributes: BTreeMap<String, String>,
    ) -> Self {
        let now = Utc::now();
        Self {
            kind: kind.into(),
            action: action.into(),
            actor: Actor {
                id: name.into(),
                attributes,
            },
            scope: "local".into(),
            status: action.into(),
            id: name.into(),
            from: from.into(),
            time: now.timestamp(),
            time_nano: now.timestamp_nanos_opt().unwrap_or(0),
        }
    }
}

pub struct EventBus {
    live: broadcast::Sender<(String, Event)>,
    history: Mutex<HashMap<String, VecDeque<Event>>>,
    window: usize,
}

impl EventBus {
    pub fn new(window: usize) -> Self {
        Self {
            live: broadcast::channel(1024).0,
            history: Mutex::default(),
            window,
        }
    }

    pub fn emit(&self, tenant: &str, event: Event) {
        {
            let mut history = self.history.lock().expect("poisoned");
            let kept = history.entry(tenant.to_string()).or_default();
            if kept.len() == self.window {
                kept.pop_front();
            }
            kept.push_back(event.clone());
        }
        // Nobody listening is fine.
        let _ = self.live.send((tenant.to_string(), event));
    }

    /// The tenant's retained events and a receiver for what comes next, taken together so
    /// nothing falls between them. The receiver carries every tenant's events: filter by tenant.
    pub fn subscribe(&self, tenant: &str) -> (Vec<Event>, broadcast::Receiver<(String, Event)>) {
        let history = self.history.lock().expect("poisoned");
        let rx = self.live.subscribe();
        let kept = history
            .get(tenant)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default();
        (kept, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str) -> Container {
        serde_json::from_value(serde_json::json!({
            "id": id, "tenant": "t", "name": "web", "created": "2026-11-22T00:00:00Z", "image": "busybox",
            "image_id": "sha256:x", "path": "sh", "args": [], "config": {"Labels": {"a": "b"}},
            "host_config": {}, "size": "s4", "state": {"status": "running", "exit_code": 0, "error": "",
            "oom_killed": false, "started_at": null, "finished_at": null, "stopped_by_user": false},
            "restart_count": 0
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn keeps_a_window_per_tenant_and_streams_live() {
        let bus = EventBus::new(2);
        for action in ["create", "start", "die"] {
            bus.emit("t", Event::container(&container("c1"), action, &[]));
        }
        bus.emit("u", Event::container(&container("c2"), "create", &[]));
        let (kept, mut rx) = bus.subscribe("t");
        let actions: Vec<_> = kept.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            ["start", "die"],
            "the oldest fell out of the window; u's is not t's"
        );
        assert_eq!(kept[0].actor.attributes["a"], "b");
        bus.emit(
            "t",
            Event::container(&container("c1"), "destroy", &[("exitCode", "0".into())]),
        );
        let (tenant, live) = rx.recv().await.unwrap();
        assert_eq!((tenant.as_str(), live.action.as_str()), ("t", "destroy"));
    }
}
