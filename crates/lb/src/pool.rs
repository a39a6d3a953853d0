//! A service's backends and the choice of one for each connection or request.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::backend::Backend;
use crate::config::{Algorithm, BackendConfig};

/// A client not seen for this long loses its affinity (the table must not grow forever).
const AFFINITY_IDLE: Duration = Duration::from_secs(30 * 60);
/// Above this many clients, idle ones are forgotten.
const AFFINITY_MAX_CLIENTS: usize = 100_000;

/// A backend in the pool, with the health check task that lives exactly as long.
struct Member {
    backend: Arc<Backend>,
    health_check: JoinHandle<()>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.health_check.abort();
    }
}

#[derive(Default)]
pub struct Pool {
    members: RwLock<Vec<Member>>,
    /// Rotates round robin, and breaks leastconn ties so equal loads still spread.
    turn: AtomicUsize,
    /// Client address -> backend id, for session affinity.
    affinity: Mutex<HashMap<IpAddr, (String, Instant)>>,
}

impl Pool {
    /// Makes the pool hold exactly `wanted`. Backends kept (same id and address) keep their
    /// state; new ones get a health check from `start_check`; removed ones are only dropped
    /// from the pool: connections and requests already on them finish (drain).
    pub fn set_backends(
        &self,
        wanted: &[BackendConfig],
        start_check: impl Fn(Arc<Backend>) -> JoinHandle<()>,
    ) {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        let mut old: Vec<Member> = std::mem::take(&mut *members);
        for config in wanted {
            let kept = old.iter().position(|m| {
                m.backend.id == config.id
                    && m.backend.addr == config.addr
                    && m.backend.source == config.source
            });
            let member = match kept {
                Some(index) => old.swap_remove(index),
                None => {
                    let backend = Arc::new(Backend::new(config));
                    tracing::info!(id = %backend.id, addr = %backend.addr, "backend added");
                    Member {
                        health_check: start_check(backend.clone()),
                        backend,
                    }
                }
            };
            members.push(member);
        }
        for gone in old {
            tracing::info!(id = %gone.backend.id, addr = %gone.backend.addr, "backend removed; draining");
        }
    }

    pub fn backends(&self) -> Vec<Arc<Backend>> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        members.iter().map(|m| m.backend.clone()).collect()
    }

    /// Picks a healthy backend for `client`, other than those already `tried` for this
    /// connection or request; `None` when there is none left.
    pub fn pick(
        &self,
        algorithm: Algorithm,
        session_affinity: bool,
        client: IpAddr,
        tried: &[Arc<Backend>],
    ) -> Option<Arc<Backend>> {
        let candidates: Vec<Arc<Backend>> = self
            .backends()
            .into_iter()
            .filter(|b| b.is_up() && !tried.iter().any(|t| Arc::ptr_eq(t, b)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        if session_affinity {
            if let Some(sticky) = self.sticky_backend(client, &candidates) {
                return Some(sticky);
            }
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let chosen = match algorithm {
            Algorithm::Roundrobin => candidates[turn % candidates.len()].clone(),
            Algorithm::Leastconn => least_loaded(&candidates, turn),
            Algorithm::Source => highest_hash(&candidates, client),
        };
        if session_affinity {
            self.remember(client, &chosen.id);
        }
        Some(chosen)
    }

    fn sticky_backend(&self, client: IpAddr, candidates: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let mut table = self.affinity.lock().unwrap_or_else(|p| p.into_inner());
        let (id, seen) = table.get_mut(&client)?;
        let backend = candidates.iter().find(|b| b.id == *id)?;
        *seen = Instant::now();
        Some(backend.clone())
    }

    fn remember(&self, client: IpAddr, id: &str) {
        let mut table = self.affinity.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= AFFINITY_MAX_CLIENTS {
            table.retain(|_, (_, seen)| seen.elapsed() < AFFINITY_IDLE);
        }
        if table.len() < AFFINITY_MAX_CLIENTS {
            table.insert(client, (id.to_owned(), Instant::now()));
        }
    }
}

/// Fewest active; among equals, the first from a rotating start.
fn least_loaded(candidates: &[Arc<Backend>], turn: usize) -> Arc<Backend> {
    let count = candidates.len();
    (0..count)
        .map(|offset| &candidates[(turn + offset) % count])
        .min_by_key(|b| b.active())
        .expect("candidates is not empty")
        .clone()
}

/// Rendezvous hashing on the client address: a client keeps its backend as long as that
/// backend is healthy, and only the clients of a backend that leaves move elsewhere.
fn highest_hash(candidates: &[Arc<Backend>], client: IpAddr) -> Arc<Backend> {
    candidates
        .iter()
        .max_by_key(|b| {
            let mut hasher = DefaultHasher::new();
            (client, &b.id).hash(&mut hasher);
            hasher.finish()
        })
        .expect("candidates is not empty")
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthConfig;

    fn pool(ids: &[&str]) -> Pool {
        let pool = Pool::default();
        let configs: Vec<BackendConfig> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| BackendConfig {
                id: id.to_string(),
                addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                source: None,
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        pool.set_backends(&configs, |_| tokio::spawn(async {}));
        for backend in pool.backends() {
            backend.record_check(true, &HealthConfig::default());
        }
        pool
    }

    fn client(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn ids(pool: &Pool, algorithm: Algorithm, affinity: bool, clients: &[u8]) -> Vec<String> {
        clients
            .iter()
            .map(|c| {
                pool.pick(algorithm, affinity, client(*c), &[])
                    .unwrap()
                    .id
                    .clone()
            })
            .collect()
    }

    #[test]
    fn roundrobin_takes_turns() {
        let pool = pool(&["a", "b", "c"]);
        let picks = ids(&pool, Algorithm::Roundrobin, false, &[1, 1, 1, 1, 1, 1]);
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn leastconn_prefers_the_idle_backend() {
        let pool = pool(&["a", "b", "c"]);
        let backends = pool.backends();
        let _busy = [
            backends[0].track(),
            backends[1].track(),
            backends[1].track(),
        ];
        let picks = ids(&pool, Algorithm::Leastconn, false, &[1, 2, 3]);
        assert_eq!(picks, ["c", "c", "c"]);
    }

    #[test]
    fn source_is_stable_per_client_and_only_moves_a_leaving_backends_clients() {
        let pool = pool(&["a", "b", "c"]);
        let clients: Vec<u8> = (1..=60).collect();
        let before = ids(&pool, Algorithm::Source, false, &clients);
        assert_eq!(before, ids(&pool, Algorithm::Source, false, &clients));
        assert!(["a", "b", "c"]
            .iter()
            .all(|id| before.iter().any(|p| p == id)));

        let down = &pool.backends()[1];
        for _ in 0..3 {
            down.record_check(false, &HealthConfig::default());
        }
        let after = ids(&pool, Algorithm::Source, false, &clients);
        for (b, a) in before.iter().zip(&after) {
            if b != "b" {
                assert_eq!(b, a);
            }
        }
    }

    #[test]
    fn affinity_sticks_while_healthy_then_moves() {
        let pool = pool(&["a", "b", "c"]);
        let first = ids(&pool, Algorithm::Roundrobin, true, &[7, 7, 7]);
        assert_eq!(first, ["a", "a", "a"]);
        let a = &pool.backends()[0];
        for _ in 0..3 {
            a.record_check(false, &HealthConfig::default());
        }
        let moved = ids(&pool, Algorithm::Roundrobin, true, &[7, 7]);
        assert_ne!(moved[0], "a");
        assert_eq!(moved[0], moved[1]);
    }

    #[test]
    fn tried_and_unhealthy_backends_are_skipped() {
        let pool = pool(&["a", "b"]);
        let backends = pool.backends();
        let picked = pool.pick(Algorithm::Roundrobin, false, client(1), &backends[..1]);
        assert_eq!(picked.unwrap().id, "b");
        assert!(pool
            .pick(Algorithm::Roundrobin, false, client(1), &backends)
            .is_none());
    }

    #[test]
    fn reload_keeps_matching_backends_and_drops_the_rest() {
        let pool = pool(&["a", "b"]);
        let a = pool.backends()[0].clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let wanted = [
            BackendConfig {
                id: "a".into(),
                addr: a.addr,
                source: None,
            },
            BackendConfig {
                id: "c".into(),
                addr: "127.0.0.1:2000".parse().unwrap(),
                source: None,
            },
        ];
        pool.set_backends(&wanted, |_| tokio::spawn(async {}));
        let now = pool.backends();
        assert!(Arc::ptr_eq(&now[0], &a));
        assert_eq!(now[1].id, "c");
        assert!(!now[1].is_up());
        assert_eq!(now.len(), 2);
    }
}
