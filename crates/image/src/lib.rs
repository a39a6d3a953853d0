//! The content store for container images on one node.
//!
//! Images arrive from registries ([`pull::Puller`]) or as archives
//! ([`ImageStore::load_archive`]): the tarball `docker save` writes
//! (old and new forms) or an OCI image layout tar; layers plain, gzip or zstd. Every blob named by
//! a digest is checked, and every layer's uncompressed digest must match the config's
//! `rootfs.diff_ids`. Each container VM boots from an ext4 disk built once per image
//! ([`ImageStore::ensure_disk`]) by unpacking the layers (see [`unpack`](crate::unpack) for the
//! rules) and running `mkfs.ext4 -d`.
//!
//! On-disk layout under the store root (`DATA/images`):
//! - `layers/<hex>.tar`: uncompressed layer tars by diff ID, shared between images;
//! - `images/<hex>.json`: [`ImageInfo`] by image ID (the sha256 of the config blob);
//! - `configs/<hex>.json`: the config blob itself, byte for byte (its sha256 is the image ID,
//!   so `save` and `push` hand it on unchanged);
//! - `pushed/<hex>.json`: the gzip blob a push made of layer `<hex>` (digest and size), so
//!   the next push asks the registry for it before compressing the layer again;
//! - `disks/<hex>.ext4`: root disks;
//! - `tmp/`: work in progress (mode 0700, emptied by [`ImageStore::open`]).
//!
//! Everything is written under `tmp/` and renamed into place, so a crash never leaves a half
//! layer, image or disk. All calls block: async callers use `spawn_blocking`. Tags here are only
//! what the archive said; tenancy and tag ownership live in hyperd's store.
//!
//! Beside images, [`source`] turns a volume's source (a git repository, a tarball URL, a
//! tenant's tar) into a directory tree with the same safe unpacking, and [`policy`] decides which
//! addresses a tenant-supplied URL may reach.

mod archive;
mod commit;
mod disk;
mod error;
pub mod fetch;
mod layer;
pub mod login;
mod manifest;
pub mod policy;
pub mod pull;

pub mod push;
mod save;
pub mod source;
mod unpack;

#[cfg(test)]
mod fuzz_unpack;
#[cfg(test)]
mod test_utils;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use commit::LayerScratch;
use error::IoContext;
pub use error::{ImageError, Result};
pub use save::SaveItem;

/// An image as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `sha256:<hex of the config blob>`.
    pub id: String,
    /// `repo:tag` names the archive gave the image (merged over loads).
    pub repo_tags: Vec<String>,
    /// The full OCI/Docker image config JSON.
    pub config: serde_json::Value,
    /// Bytes of file content once unpacked (all layers).
    pub size: u64,
    /// Layer diff IDs, bottom first.
    pub layers: Vec<String>,
    /// The config's `created` time.
    pub created: Option<String>,
    /// The image a `commit` made this one from (Docker's `Parent`); empty for pulls and loads.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent: String,
}

/// A path under `tmp/` removed when dropped, unless kept.
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("not kept")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
                Err(_) => Ok(()),
            };
        }
    }
}

/// The image store of one node. Cheap to share behind an `Arc`; methods may run concurrently.
pub struct ImageStore {
    root: PathBuf,
    /// Held while images and layers are added or removed.
    meta: Mutex<()>,
    /// One lock per image whose disk is being built.
    building: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// The hex part of a full image ID or digest, if it is one.
fn full_hex(id: &str) -> Option<&str> {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(hex)
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root` and clears leftovers of interrupted work.
    pub fn open(root: PathBuf) -> Result<ImageStore> {
        for sub in ["layers", "images", "configs", "pushed", "disks"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
        }
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).ctx(|| format!("clearing {}", tmp.display()))?;
        }
        fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        // Unpacked trees hold set-id files owned by root: keep other users out.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("chmod {}", tmp.display()))?;
        Ok(ImageStore {
            root,
            meta: Mutex::new(()),
            building: Mutex::new(HashMap::new()),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn temp(&self, prefix: &str) -> TempPath {
        let n: u64 = rand::random();
        TempPath(Some(
            self.root.join("tmp").join(format!("{prefix}-{n:016x}")),
        ))
    }

    fn layer_path(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        self.root.join("layers").join(format!("{hex}.tar"))
    }

    fn image_path(&self, hex: &str) -> PathBuf {
        self.root.join("images").join(format!("{hex}.json"))
    }

    /// Where a user of this store may keep an empty overlay of the image's disk (a qcow2 over
    /// it) to copy for each container: `disks/<hex>.overlay.qcow2`, removed with the image.
    pub fn overlay_template(&self, id: &str) -> Result<PathBuf> {
        Ok(overlay_template_of(&self.disk_path(&self.resolve(id)?)))
    }

    fn config_path(&self, hex: &str) -> PathBuf {
        self.root.join("configs").join(format!("{hex}.json"))
    }

    /// The config blob of image `id`, exactly as it was pulled or loaded. An image stored
    /// before hyper kept config blobs is rebuilt from its record if that gives the same
    /// digest, and refused otherwise.
    pub fn config_blob(&self, id: &str) -> Result<Vec<u8>> {
        let hex = self.resolve(id)?;
        match fs::read(self.config_path(&hex)) {
            Ok(raw) => return Ok(raw),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx(|| format!("reading the config of sha256:{hex}")),
        }
        let info = self.read_info(&hex)?;
        let raw = serde_json::to_vec(&info.config).expect("a JSON value serializes");
        if archive::sha256_digest(&raw) == info.id {
            return Ok(raw);
        }
        Err(ImageError::BadArchive(format!(
            "image {} was stored before hyper kept config blobs: pull or load it again",
            info.id
        )))
    }

    fn disk_path(&self, hex: &str) -> PathBuf {
        self.root.join("disks").join(format!("{hex}.ext4"))
    }

    /// Writes `data` to `dest` atomically (temp file, fsync, rename).
    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<()> {
        let tmp = self.temp("write");
        let mut f =
            fs::File::create(tmp.path()).ctx(|| format!("creating {}", tmp.path().display()))?;
        f.write_all(data)
            .ctx(|| format!("writing {}", tmp.path().display()))?;
        f.sync_all()
            .ctx(|| format!("writing {}", tmp.path().display()))?;
        fs::rename(tmp.path(), dest).ctx(|| format!("renaming to {}", dest.display()))?;
        Ok(())
    }

    /// Loads every image of a `docker save` or OCI layout archive and returns them.
    pub fn load_archive(&self, r: impl Read) -> Result<Vec<ImageInfo>> {
        let work = self.temp("load");
        let spool_dir = work.path().join("spool");
        fs::create_dir_all(&spool_dir).ctx(|| format!("creating {}", spool_dir.display()))?;
        let spool = archive::Spool::read(r, &spool_dir)?;
        let specs = spool.images()?;

        // Verify and decompress everything before touching the store.
        let mut staged = Vec::new();
        let mut n = 0;
        for spec in specs {
            let config: serde_json::Value =
                serde_json::from_slice(&spec.config).map_err(|source| ImageError::Json {
                    context: "image config".into(),
                    source,
                })?;
            let id = archive::sha256_digest(&spec.config);
            let diff_ids: Vec<String> = config
                .pointer("/rootfs/diff_ids")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .ok_or_else(|| {
                    ImageError::BadArchive(format!("config {id} has no rootfs.diff_ids"))
                })?;
            if diff_ids.len() != spec.layers.len() {
                return Err(ImageError::BadArchive(format!(
                    "image {id} lists {} layers but its config {} diff IDs",
                    spec.layers.len(),
                    diff_ids.len()
                )));
            }
            let mut size = 0;
            let mut layers = Vec::new();
            for (l, diff_id) in spec.layers.iter().zip(&diff_ids) {
                if let Some(d) = &l.digest {
                    let actual = layer::file_sha256(&l.file)?;
                    if actual != *d {
                        return Err(ImageError::DigestMismatch {
                            what: "layer",
                            digest: d.clone(),
                            actual,
                        });
                    }
                }
                n += 1;
                let dest = work.path().join(format!("layer{n}.tar"));
                let got = layer::ingest(&l.file, &dest, diff_id)?;
                if got.diff_id != *diff_id {
                    return Err(ImageError::DigestMismatch {
                        what: "layer",
                        digest: diff_id.clone(),
                        actual: got.diff_id,
                    });
                }
                size += got.size;
                layers.push((dest, diff_id.clone()));
            }
            // What would fail to unpack at the image's first start (a hard link to nothing)
            // is refused now, with nothing of the archive stored.
            unpack::check_layers(&layers)?;
            let created = config
                .get("created")
                .and_then(|c| c.as_str())
                .map(str::to_string);
            let info = ImageInfo {
                id,
                repo_tags: spec.repo_tags,
                config,
                size,
                layers: diff_ids,
                created,
                parent: String::new(),
            };
            staged.push((info, layers, spec.config));
        }

        let _guard = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (mut info, layers, raw_config) in staged {
            for (tmp, diff_id) in layers {
                let dest = self.layer_path(&diff_id);
                if !dest.exists() {
                    fs::rename(&tmp, &dest).ctx(|| format!("storing layer {diff_id}"))?;
                }
            }
            let hex = full_hex(&info.id).expect("computed digest").to_string();
            // The caller gets the names this archive gives: the store's merged list holds
            // names other loads (other tenants') gave the same image.
            let named = info.repo_tags.clone();
            if let Ok(old) = self.read_info(&hex) {
                for t in old.repo_tags {
                    if !info.repo_tags.contains(&t) {
                        info.repo_tags.push(t);
                    }
                }
            }
            self.write_atomic(&self.config_path(&hex), &raw_config)?;
            let json = serde_json::to_vec_pretty(&info).expect("ImageInfo serializes");
            self.write_atomic(&self.image_path(&hex), &json)?;
            tracing::info!(id = %info.id, tags = ?named, "loaded image");
            info.repo_tags = named;
            out.push(info);
        }
        Ok(out)
    }

    /// Records an image whose layers are all in the store (a pull's last step); tags merge
    /// with those the image already had.
    pub(crate) fn add_pulled(
        &self,
        config_blob: &[u8],
        diff_ids: &[String],
        repo_tags: Vec<String>,
    ) -> Result<ImageInfo> {
        let config: serde_json::Value =
            serde_json::from_slice(config_blob).map_err(|source| ImageError::Json {
                context: "image config".into(),
                source,
            })?;
        let id = archive::sha256_digest(config_blob);
        let mut size = 0;
        for d in diff_ids {
            size += layer::content_size(&self.layer_path(d))?;
        }
        let created = config
            .get("created")
            .and_then(|c| c.as_str())
            .map(str::to_string);
        let mut info = ImageInfo {
            id,
            repo_tags,
            config,
            size,
            layers: diff_ids.to_vec(),
            created,
            parent: String::new(),
        };
        let _guard = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        for d in diff_ids {
            if !self.layer_path(d).exists() {
                return Err(ImageError::BadArchive(format!("layer {d} went missing")));
            }
        }
        let hex = full_hex(&info.id).expect("computed digest").to_string();
        if let Ok(old) = self.read_info(&hex) {
            for t in old.repo_tags {
                if !info.repo_tags.contains(&t) {
                    info.repo_tags.push(t);
                }
            }
        }
        self.write_atomic(&self.config_path(&hex), config_blob)?;
        let json = serde_json::to_vec_pretty(&info).expect("ImageInfo serializes");
        self.write_atomic(&self.image_path(&hex), &json)?;
        tracing::info!(id = %info.id, tags = ?info.repo_tags, "pulled image");
        Ok(info)
    }

    fn read_info(&self, hex: &str) -> Result<ImageInfo> {
        let p = self.image_path(hex);
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(format!("sha256:{hex}")))
            }
            Err(e) => return Err(e).ctx(|| format!("reading {}", p.display())),
        };
        serde_json::from_slice(&data).map_err(|source| ImageError::Json {
            context: p.display().to_string(),
            source,
        })
    }

    /// The hex ID of the image `id` names: a full ID (with or without `sha256:`) or a unique
    /// prefix of at least one hex digit.
    fn resolve(&self, id: &str) -> Result<String> {
        if let Some(hex) = full_hex(id) {
            return Ok(hex.to_string());
        }
        let prefix = id.strip_prefix("sha256:").unwrap_or(id);
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ImageError::NotFound(id.to_string()));
        }
        let matches: Vec<String> = self
            .ids()?
            .into_iter()
            .filter(|h| h.starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        match matches.len() {
            0 => Err(ImageError::NotFound(id.to_string())),
            1 => Ok(matches.into_iter().next().expect("one")),
            _ => Err(ImageError::Ambiguous(id.to_string())),
        }
    }

    fn ids(&self) -> Result<Vec<String>> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let e = e.ctx(|| format!("reading {}", dir.display()))?;
            if let Some(hex) = e.file_name().to_str().and_then(|n| n.strip_suffix(".json")) {
                if full_hex(hex).is_some() {
                    out.push(hex.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The image `id` names (full ID, or unique hex prefix).
    pub fn get(&self, id: &str) -> Result<ImageInfo> {
        let hex = self.resolve(id)?;
        self.read_info(&hex)
    }

    /// Every image, by ID. Unreadable entries are logged and skipped.
    pub fn list(&self) -> Vec<ImageInfo> {
        let ids = self.ids().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "listing images");
            Vec::new()
        });
        ids.iter()
            .filter_map(|hex| {
                self.read_info(hex)
                    .map_err(|e| tracing::warn!(error = %e, "skipping unreadable image"))
                    .ok()
            })
            .collect()
    }

    /// Removes an image, its disk, and the layers no other image uses.
    pub fn remove(&self, id: &str) -> Result<()> {
        let hex = self.resolve(id)?;
        let _guard = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.image_path(&hex);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(id.to_string()))
            }
            Err(e) => return Err(e).ctx(|| format!("removing {}", p.display())),
        }
        let disk = self.disk_path(&hex);
        for file in [
            overlay_template_of(&disk),
            manifest_of(&disk),
            disk,
            self.config_path(&hex),
        ] {
            if let Err(e) = fs::remove_file(&file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(e).ctx(|| format!("removing {}", file.display()));
                }
            }
        }
        let used: HashSet<PathBuf> = self
            .list()
            .iter()
            .flat_map(|i| i.layers.iter().map(|l| self.layer_path(l)))
            .collect();
        let dir = self.root.join("layers");
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let path = e.ctx(|| format!("reading {}", dir.display()))?.path();
            if !used.contains(&path) {
                fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
                if let Some(name) = path.file_stem() {
                    let pushed = self.pushed_path(&name.to_string_lossy());
                    let _ = fs::remove_file(pushed);
                }
            }
        }
        Ok(())
    }

    /// The ext4 root disk of image `id`, built on first use (a raw image labelled `hyper-root`).
    pub fn ensure_disk(&self, id: &str) -> Result<PathBuf> {
        let hex = self.resolve(id)?;
        let disk = self.disk_path(&hex);
        if disk.exists() {
            return Ok(disk);
        }
        let lock = {
            let mut b = self.building.lock().unwrap_or_else(|e| e.into_inner());
            b.entry(hex.clone()).or_default().clone()
        };
        let _building = lock.lock().unwrap_or_else(|e| e.into_inner());
        if disk.exists() {
            return Ok(disk);
        }
        let info = self.read_info(&hex)?;
        let tree = self.temp("tree");
        fs::create_dir(tree.path()).ctx(|| format!("creating {}", tree.path().display()))?;
        fs::set_permissions(tree.path(), fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", tree.path().display()))?;
        let layers: Vec<(PathBuf, String)> = info
            .layers
            .iter()
            .map(|l| (self.layer_path(l), l.clone()))
            .collect();
        unpack::unpack_layers(&layers, tree.path())?;
        let tmp_disk = self.temp("disk");
        disk::mkfs(tree.path(), tmp_disk.path())?;
        drop(tree);
        fs::File::open(tmp_disk.path())
            .and_then(|f| f.sync_all())
            .ctx(|| format!("syncing {}", tmp_disk.path().display()))?;
        {
            let _guard = self.meta.lock().unwrap_or_else(|e| e.into_inner());
            if !self.image_path(&hex).exists() {
                return Err(ImageError::NotFound(id.to_string()));
            }
            fs::rename(tmp_disk.path(), &disk).ctx(|| format!("renaming to {}", disk.display()))?;
        }
        self.building
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hex);
        tracing::info!(id = %info.id, disk = %disk.display(), "built root disk");
        Ok(disk)
    }
}

impl ImageStore {
    /// The manifest of image `id`'s file tree (one `agent_proto::FileMeta` JSON line per entry,
    /// what the root disk holds but `/lost+found`), made on first use from the layers.
    pub fn manifest(&self, id: &str) -> Result<PathBuf> {
        let hex = self.resolve(id)?;
        let path = manifest_of(&self.disk_path(&hex));
        if path.exists() {
            return Ok(path);
        }
        let info = self.read_info(&hex)?;
        let tree = self.temp("tree");
        fs::create_dir(tree.path()).ctx(|| format!("creating {}", tree.path().display()))?;
        let layers: Vec<(PathBuf, String)> = info
            .layers
            .iter()
            .map(|l| (self.layer_path(l), l.clone()))
            .collect();
        unpack::unpack_layers(&layers, tree.path())?;
        let mut lines = Vec::new();
        agent_proto::walk_tree(tree.path(), &mut |meta| {
            serde_json::to_writer(&mut lines, &meta).map_err(std::io::Error::other)?;
            lines.push(b'\n');
            Ok(())
        })
        .ctx(|| format!("listing {}", tree.path().display()))?;
        drop(tree);
        self.write_atomic(&path, &lines)?;
        Ok(path)
    }
}

fn manifest_of(disk: &Path) -> PathBuf {
    disk.with_extension("manifest")
}

fn overlay_template_of(disk: &Path) -> PathBuf {
    disk.with_extension("overlay.qcow2")
}
