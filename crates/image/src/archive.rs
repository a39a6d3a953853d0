//! Reading image archives: `docker save` tarballs and OCI image layout tars.
//!
//! An archive is a tar whose member order is not fixed (docker writes manifest.json last), so it
//! is first spooled into a scratch directory; then the manifests are read and every image is
//! described as its config blob plus its layer blobs, with the digests that name them.
//!
//! - `docker save`: `manifest.json` = `[{"Config": "<hex>.json" | "blobs/sha256/<hex>",
//!   "RepoTags": [...], "Layers": ["<id>/layer.tar" | "blobs/sha256/<hex>", ...]}]`.
//!   Older docker writes a repeated layer as a symlink to the first copy.
//! - OCI layout: `oci-layout`, `index.json` (manifests or nested indexes), `blobs/<alg>/<hex>`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{ImageError, IoContext, Result};

/// One image found in an archive.
#[derive(Debug)]
pub(crate) struct ImageSpec {
    pub config: Vec<u8>,
    pub repo_tags: Vec<String>,
    pub layers: Vec<LayerRef>,
}

/// A layer blob in the spooled archive.
#[derive(Debug)]
pub(crate) struct LayerRef {
    /// Where the blob is in the scratch directory.
    pub file: PathBuf,
    /// `sha256:<hex>` when the archive names the blob by digest.
    pub digest: Option<String>,
}

/// The archive spooled to disk: archive path -> scratch file.
pub(crate) struct Spool {
    files: HashMap<String, PathBuf>,
}

/// Normalises an archive member name (`./a//b` -> `a/b`); `None` if it escapes.
fn member_name(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

impl Spool {
    /// Copies every regular member of the tar in `r` into `dir`, resolving symlinked and
    /// hard-linked members to the files they name.
    pub fn read(r: impl Read, dir: &Path) -> Result<Spool> {
        let mut archive = tar::Archive::new(r);
        let mut files = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let entries = archive.entries().ctx(|| "reading the archive".into())?;
        for (n, entry) in entries.enumerate() {
            let mut entry = entry.ctx(|| "reading the archive".into())?;
            let path = entry
                .path()
                .ctx(|| "reading an archive member name".into())?
                .into_owned();
            let Some(name) = member_name(&path) else {
                return Err(ImageError::BadArchive(format!(
                    "member {} escapes the archive",
                    path.display()
                )));
            };
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let dest = dir.join(format!("m{n}"));
                    let mut f =
                        File::create(&dest).ctx(|| format!("creating {}", dest.display()))?;
                    io::copy(&mut entry, &mut f)
                        .ctx(|| format!("reading archive member {name}"))?;
                    files.insert(name, dest);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .ctx(|| "reading a link target".into())?
                        .unwrap_or_default()
                        .into_owned();
                    let joined = if entry.header().entry_type() == tar::EntryType::Symlink {
                        Path::new(&name)
                            .parent()
                            .unwrap_or(Path::new(""))
                            .join(target)
                    } else {
                        target
                    };
                    if let Some(t) = member_name(&joined) {
                        links.push((name, t));
                    }
                }
                _ => {}
            }
        }
        // Links may point at links; a few rounds resolve any sane chain.
        for _ in 0..8 {
            for (name, target) in &links {
                if !files.contains_key(name) {
                    if let Some(f) = files.get(target).cloned() {
                        files.insert(name.clone(), f);
                    }
                }
            }
        }
        Ok(Spool { files })
    }

    fn get(&self, name: &str) -> Option<&PathBuf> {
        self.files.get(name.trim_start_matches("./"))
    }

    fn read_file(&self, name: &str) -> Result<Vec<u8>> {
        let path = self
            .get(name)
            .ok_or_else(|| ImageError::BadArchive(format!("missing member {name}")))?;
        fs::read(path).ctx(|| format!("reading archive member {name}"))
    }

    fn blob_path(digest: &str) -> Result<String> {
        let (alg, hex) = digest
            .split_once(':')
            .ok_or_else(|| ImageError::BadArchive(format!("bad digest {digest:?}")))?;
        if alg != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ImageError::BadArchive(format!(
                "unsupported digest {digest:?}"
            )));
        }
        Ok(format!("blobs/{alg}/{hex}"))
    }

    /// Reads the blob named by `digest` and checks it.
    fn read_blob(&self, digest: &str, what: &'static str) -> Result<Vec<u8>> {
        let data = self.read_file(&Self::blob_path(digest)?)?;
        check_digest(&data, digest, what)?;
        Ok(data)
    }

    /// The digest a `blobs/sha256/<hex>` member name implies.
    fn digest_of_name(name: &str) -> Option<String> {
        let hex = name
            .trim_start_matches("./")
            .strip_prefix("blobs/sha256/")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("sha256:{hex}"))
    }

    /// Every image the archive describes.
    pub fn images(&self) -> Result<Vec<ImageSpec>> {
        if self.get("manifest.json").is_some() {
            self.docker_images()
        } else if self.get("index.json").is_some() {
            self.oci_images()
        } else {
            Err(ImageError::NoManifest)
        }
    }

    fn docker_images(&self) -> Result<Vec<ImageSpec>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let raw = self.read_file("manifest.json")?;
        let entries: Vec<Entry> =
            serde_json::from_slice(&raw).map_err(|source| ImageError::Json {
                context: "manifest.json".into(),
                source,
            })?;
        let mut out = Vec::new();
        for e in entries {
            let config = self.read_file(&e.config)?;
            if let Some(d) = Self::digest_of_name(&e.config) {
                check_digest(&config, &d, "config")?;
            } else if let Some(hex) = e.config.strip_suffix(".json") {
                // Old docker names the config <image id hex>.json.
                if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    check_digest(&config, &format!("sha256:{hex}"), "config")?;
                }
            }
            let mut layers = Vec::new();
            for l in &e.layers {
                let file = self
                    .get(l)
                    .ok_or_else(|| ImageError::BadArchive(format!("missing layer {l}")))?
                    .clone();
                layers.push(LayerRef {
                    file,
                    digest: Self::digest_of_name(l),
                });
            }
            out.push(ImageSpec {
                config,
                repo_tags: e.repo_tags.unwrap_or_default(),
                layers,
            });
        }
        Ok(out)
    }

    fn oci_images(&self) -> Result<Vec<ImageSpec>> {
        let raw = self.read_file("index.json")?;
        let index: Index = serde_json::from_slice(&raw).map_err(|source| ImageError::Json {
            context: "index.json".into(),
            source,
        })?;
        let mut out = Vec::new();
        for desc in &index.manifests {
            let tags = oci_tags(desc);
            let manifest = self.resolve_manifest(desc, 0)?;
            let config = self.read_blob(&manifest.config.digest, "config")?;
            let mut layers = Vec::new();
            for l in &manifest.layers {
                let name = Self::blob_path(&l.digest)?;
                let file = self
                    .get(&name)
                    .ok_or_else(|| ImageError::BadArchive(format!("missing layer {}", l.digest)))?
                    .clone();
                layers.push(LayerRef {
                    file,
                    digest: Some(l.digest.clone()),
                });
            }
            // One image may be listed under several names.
            if let Some(prev) = out.iter_mut().find(|s: &&mut ImageSpec| s.config == config) {
                for t in tags {
                    if !prev.repo_tags.contains(&t) {
                        prev.repo_tags.push(t);
                    }
                }
            } else {
                out.push(ImageSpec {
                    config,
                    repo_tags: tags,
                    layers,
                });
            }
        }
        Ok(out)
    }

    /// Follows nested indexes down to an image manifest, preferring linux/amd64.
    fn resolve_manifest(&self, desc: &Descriptor, depth: usize) -> Result<Manifest> {
        if depth > 4 {
            return Err(ImageError::BadArchive("indexes nested too deep".into()));
        }
        let blob = self.read_blob(&desc.digest, "manifest")?;
        let value: serde_json::Value =
            serde_json::from_slice(&blob).map_err(|source| ImageError::Json {
                context: desc.digest.clone(),
                source,
            })?;
        if value.get("manifests").is_some() {
            let index: Index =
                serde_json::from_value(value).map_err(|source| ImageError::Json {
                    context: desc.digest.clone(),
                    source,
                })?;
            let pick = index
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .or_else(|| index.manifests.iter().find(|d| d.platform.is_none()))
                .ok_or_else(|| {
                    ImageError::BadArchive(format!(
                        "index {} has no linux/amd64 image",
                        desc.digest
                    ))
                })?;
            return self.resolve_manifest(pick, depth + 1);
        }
        serde_json::from_value(value).map_err(|source| ImageError::Json {
            context: desc.digest.clone(),
            source,
        })
    }
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

/// The repo tags of an OCI index entry: containerd's full name, else a full `ref.name`.
fn oci_tags(desc: &Descriptor) -> Vec<String> {
    let name = desc
        .annotations
        .get("io.containerd.image.name")
        .or_else(|| {
            desc.annotations
                .get("org.opencontainers.image.ref.name")
                .filter(|n| n.contains(':'))
        });
    name.into_iter().cloned().collect()
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Fails unless `data` hashes to `digest`.
pub(crate) fn check_digest(data: &[u8], digest: &str, what: &'static str) -> Result<()> {
    let actual = sha256_digest(data);
    if actual != digest.to_ascii_lowercase() {
        return Err(ImageError::DigestMismatch {
            what,
            digest: digest.into(),
            actual,
        });
    }
    Ok(())
}
