//! The runtime's side of populating volumes (see `crate::volumes::init`): a volume being
//! initialised is held like a running container's, so no container starts on it meanwhile.

use std::path::{Path, PathBuf};

use super::Runtime;
use crate::volumes::init::is_url;
use crate::volumes::Volume;
use crate::{Result, RuntimeError};

/// What `/volumes/initialize` answers: an upload session for the local sources (empty when
/// there are none).
#[derive(Debug, Default)]
pub struct InitAnswer {
    pub session: String,
    pub cookie: String,
    /// Volume name -> the path its tar is posted to.
    pub uploads: Vec<(String, String)>,
}

/// Holder name of a volume being initialised (shown where a container id would be).
const INITIALISING: &str = "initialising";

impl Runtime {
    /// `POST /volumes/initialize`: URL sources are fetched and built now; local ones get an
    /// upload session.
    pub async fn initialize_volumes(
        &self,
        tenant: &str,
        items: &[(String, String)],
    ) -> Result<InitAnswer> {
        let mut local = Vec::new();
        for (name, source) in items {
            let v = self.volumes.get(tenant, name)?;
            if source.is_empty() {
                return Err(RuntimeError::Invalid(format!(
                    "no source given for volume {name}"
                )));
            }
            if let Some(holder) = self.volumes.holder(tenant, name)? {
                return Err(crate::volumes::in_use(name, &holder.container));
            }
            if is_url(source) {
                self.populate(&v, |tree| {
                    let (source, tree) = (source.clone(), tree.to_path_buf());
                    let policy = self.volumes.fetch_policy.clone();
                    let limit = v.bytes();
                    async move {
                        image::source::fetch_into(&source, &tree, limit, &policy)
                            .await
                            .map(|_| ())
                            .map_err(|e| crate::error_chain(&e))
                    }
                })
                .await?;
            } else if source.starts_with('/') {
                local.push(name.clone());
            } else {
                return Err(RuntimeError::Invalid(format!(
                    "invalid source {source:?} for volume {name}: give a git or http(s) URL, or an absolute local path for the client to upload"
                )));
            }
        }
        if local.is_empty() {
            return Ok(InitAnswer::default());
        }
        let (session, cookie) = self.volumes.uploads.open(tenant, &local);
        let uploads = local
            .into_iter()
            .map(|name| {
                // No query: Hyper's client appends `?cookie=...` to it.
                let url = format!("/volumes/upload/{session}/{name}");
                (name, url)
            })
            .collect();
        Ok(InitAnswer {
            session,
            cookie,
            uploads,
        })
    }

    /// `PUT /volumes/uploadfinish`: each uploaded tar becomes its volume's content. A volume
    /// whose upload never came keeps what it had; the first failure is the answer.
    pub async fn finish_uploads(&self, tenant: &str, session: &str) -> Result<()> {
        let crate::volumes::init::Finished { dir, volumes } =
            self.volumes.uploads.finish(tenant, session)?;
        let mut result = Ok(());
        for (name, tar) in volumes {
            let Some(tar) = tar.filter(|t| t.exists()) else {
                continue;
            };
            let built = match self.volumes.get(tenant, &name) {
                Ok(v) => {
                    self.populate(&v, |tree| {
                        let (tar, tree, limit) = (tar.clone(), tree.to_path_buf(), v.bytes());
                        async move {
                            tokio::task::spawn_blocking(move || {
                                image::source::unpack_upload(&tar, &tree, limit)
                            })
                            .await
                            .map_err(|e| e.to_string())?
                            .map(|_| ())
                            .map_err(|e| crate::error_chain(&e))
                        }
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            if result.is_ok() {
                result = built;
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        result
    }

    /// Replaces `v`'s content with the tree `fill` makes, holding the volume meanwhile.
    async fn populate<F, Fut>(&self, v: &Volume, fill: F) -> Result<()>
    where
        F: FnOnce(&Path) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), String>>,
    {
        self.volumes
            .hold(&v.tenant, INITIALISING, std::slice::from_ref(&v.name))?;
        let scratch = self.volumes.uploads.scratch();
        let done = match scratch {
            Ok(dir) => {
                let tree = dir.join("tree");
                let r = self.build_from(v, &tree, fill).await;
                let _ = std::fs::remove_dir_all(&dir);
                r
            }
            Err(e) => Err(e),
        };
        self.volumes
            .release(&v.tenant, INITIALISING, std::slice::from_ref(&v.name));
        done
    }

    async fn build_from<F, Fut>(&self, v: &Volume, tree: &PathBuf, fill: F) -> Result<()>
    where
        F: FnOnce(&Path) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), String>>,
    {
        std::fs::create_dir_all(tree).map_err(RuntimeError::io("creating the source tree"))?;
        fill(tree)
            .await
            .map_err(|e| RuntimeError::Invalid(format!("initialising volume {}: {e}", v.name)))?;
        let size =
            image::source::tree_size(tree).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        // ext4's own metadata (inode tables, journal) takes a few percent of the disk.
        if size > v.bytes() / 100 * 90 {
            return Err(RuntimeError::Invalid(format!(
                "the source of volume {} ({} MB) does not fit in it ({} GB)",
                v.name,
                size.div_ceil(1 << 20),
                v.size_gb
            )));
        }
        let (volumes, vv, t) = (self.volumes.clone(), v.clone(), tree.clone());
        tokio::task::spawn_blocking(move || {
            volumes
                .backend(&vv)?
                .replace(&vv.id, vv.bytes(), &t)
                .map_err(|e| RuntimeError::Internal(format!("building volume {}: {e}", vv.name)))
        })
        .await
        .map_err(super::internal)?
    }
}
