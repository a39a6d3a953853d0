//! Volumes populated at creation, as Hyper's client asks (`volume init SRC:VOL`, `run -v
//! ./dir:/p`, `run -v https://host/r.git:/p`): a URL source is fetched by hyperd (through the
//! operator's address policy: tenant input never reaches the node or addresses the operator
//! did not allow); a local directory is uploaded by the client as a tar into an upload session
//! (`/volumes/initialize` opens it, one upload per volume, `/volumes/uploadfinish` builds the
//! volumes). The content becomes a new ext4 file system of the volume's size, built on the
//! host from the unpacked tree (`mkfs.ext4 -d`): nothing tenant-written is ever mounted here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Result, RuntimeError};

/// An upload session left unfinished this long is dropped (its tars with it).
const SESSION_TTL: Duration = Duration::from_secs(3600);

struct Session {
    tenant: String,
    cookie: String,
    /// Volume name -> the tar uploaded for it, once it has been.
    volumes: BTreeMap<String, Option<PathBuf>>,
    opened: Instant,
}

/// An ended upload session.
pub struct Finished {
    /// Its files, for the caller to remove once the volumes are built.
    pub dir: PathBuf,
    /// Each volume with the tar uploaded for it (`None`: the client never uploaded it).
    pub volumes: Vec<(String, Option<PathBuf>)>,
}

/// Open upload sessions and their files under `DATA/volumes/uploads`.
pub struct Uploads {
    dir: PathBuf,
    sessions: Mutex<HashMap<String, Session>>,
}

fn token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

impl Uploads {
    /// Starts empty: sessions do not outlive hyperd (a client whose upload was cut off by a
    /// restart runs `volume init` again), so what an earlier run left is removed.
    pub fn new(data_root: &Path) -> Self {
        let dir = data_root.join("volumes/uploads");
        let _ = std::fs::remove_dir_all(&dir);
        Self {
            dir,
            sessions: Mutex::default(),
        }
    }

    /// A scratch directory for one build (a fetched or unpacked tree), removed by the caller.
    pub fn scratch(&self) -> Result<PathBuf> {
        let p = self.dir.join(format!("build-{}", token()));
        std::fs::create_dir_all(&p)
            .map_err(crate::RuntimeError::io(format!("creating {}", p.display())))?;
        Ok(p)
    }

    /// A session for `tenant` expecting one upload per volume: (session id, cookie).
    pub fn open(&self, tenant: &str, volumes: &[String]) -> (String, String) {
        let mut sessions = self.sessions.lock().expect("poisoned");
        let now = Instant::now();
        let stale: Vec<String> = sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.opened) > SESSION_TTL)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            sessions.remove(&id);
            let _ = std::fs::remove_dir_all(self.dir.join(&id));
        }
        let (id, cookie) = (token(), token());
        sessions.insert(
            id.clone(),
            Session {
                tenant: tenant.into(),
                cookie: cookie.clone(),
                volumes: volumes.iter().map(|v| (v.clone(), None)).collect(),
                opened: now,
            },
        );
        (id, cookie)
    }

    /// Where the tar for `volume` in `session` goes, once the cookie proves the uploader owns
    /// the session. Returns the session's tenant.
    pub fn upload_target(
        &self,
        session: &str,
        volume: &str,
        cookie: Option<&str>,
    ) -> Result<(String, PathBuf)> {
        let mut sessions = self.sessions.lock().expect("poisoned");
        let s = sessions
            .get_mut(session)
            .filter(|s| cookie.is_some_and(|c| c == s.cookie))
            .ok_or_else(|| RuntimeError::NotFound(format!("No such upload session: {session}")))?;
        let slot = s.volumes.get_mut(volume).ok_or_else(|| {
            RuntimeError::Invalid(format!(
                "volume {volume} is not part of upload session {session}"
            ))
        })?;
        let dir = self.dir.join(session);
        std::fs::create_dir_all(&dir)
            .map_err(RuntimeError::io(format!("creating {}", dir.display())))?;
        let path = dir.join(format!("{}.tar", hex::encode(volume)));
        *slot = Some(path.clone());
        Ok((s.tenant.clone(), path))
    }

    /// Ends `session` of `tenant`.
    pub fn finish(&self, tenant: &str, session: &str) -> Result<Finished> {
        let mut sessions = self.sessions.lock().expect("poisoned");
        match sessions.get(session) {
            Some(s) if s.tenant == tenant => {}
            _ => {
                return Err(RuntimeError::NotFound(format!(
                    "No such upload session: {session}"
                )))
            }
        }
        let s = sessions.remove(session).expect("present");
        Ok(Finished {
            dir: self.dir.join(session),
            volumes: s.volumes.into_iter().collect(),
        })
    }
}

/// A URL source hyperd fetches itself (Hyper's client passes these through).
pub fn is_url(source: &str) -> bool {
    ["git://", "http://", "https://"]
        .iter()
        .any(|p| source.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_belong_to_their_tenant_and_cookie() {
        let dir = tempfile::tempdir().unwrap();
        let u = Uploads::new(dir.path());
        let (id, cookie) = u.open("alice", &["site".into()]);
        assert!(u.upload_target(&id, "site", Some("wrong")).is_err());
        assert!(u.upload_target(&id, "site", None).is_err());
        assert!(u.upload_target(&id, "other", Some(&cookie)).is_err());
        let (tenant, path) = u.upload_target(&id, "site", Some(&cookie)).unwrap();
        assert_eq!(tenant, "alice");
        assert!(path.starts_with(dir.path()));
        assert!(u.finish("bob", &id).is_err());
        let done = u.finish("alice", &id).unwrap();
        assert_eq!(done.volumes, vec![("site".to_string(), Some(path))]);
        assert!(u.finish("alice", &id).is_err(), "a session ends once");
        assert!(is_url("https://h/r.git") && !is_url("/home/u/site"));
    }
}
