//! Writing images as the tarball `docker save` writes (Docker 25's layout, which both
//! [`ImageStore::load_archive`] and any `docker load` read):
//!
//! - `blobs/sha256/<hex>`: every layer (the stored uncompressed tar, so its digest is its
//!   diff ID), every config blob (byte for byte: its digest is the image ID) and every image's
//!   OCI manifest, each written once however many images share it;
//! - `index.json` + `oci-layout`: the OCI image layout, one entry per tag (annotated with the
//!   tag's full name as containerd and Docker do), or one untagged entry;
//! - `manifest.json`: Docker's `[{"Config","RepoTags","Layers"}]`, which `docker load` reads;
//! - `repositories`: the legacy `{"name": {"tag": "<top layer>"}}` of tagged images.
//!
//! The tar is written to any [`Write`] as it is built: layers are copied from their files, never
//! held in memory, so the caller can stream it.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;

use serde_json::json;

use crate::error::{IoContext, Result};
use crate::manifest::{manifest, qualified, split_tag, Blob, Flavor, OCI_INDEX, OCI_MANIFEST};
use crate::ImageStore;

/// One image to save, and the `name:tag`s the archive gives it (none for an image named by ID).
#[derive(Debug, Clone)]
pub struct SaveItem {
    pub id: String,
    pub repo_tags: Vec<String>,
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", hex_of(digest))
}

/// A header for a member of `size` bytes; fixed owner and time, so the same images give the
/// same archive.
fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

struct Writer<W: Write> {
    tar: tar::Builder<W>,
    written: HashSet<String>,
}

impl<W: Write> Writer<W> {
    fn file(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let mut h = header(data.len() as u64, 0o644, tar::EntryType::Regular);
        self.tar
            .append_data(&mut h, name, data)
            .ctx(|| format!("writing {name} to the archive"))
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        let mut h = header(0, 0o755, tar::EntryType::Directory);
        self.tar
            .append_data(&mut h, name, std::io::empty())
            .ctx(|| format!("writing {name} to the archive"))
    }

    /// Writes blob `digest` once, from memory.
    fn blob(&mut self, digest: &str, data: &[u8]) -> Result<()> {
        if self.written.insert(digest.to_string()) {
            self.file(&blob_name(digest), data)?;
        }
        Ok(())
    }

    /// Writes blob `digest` once, copied from `path`.
    fn blob_file(&mut self, digest: &str, path: &std::path::Path) -> Result<u64> {
        let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let size = f
            .metadata()
            .ctx(|| format!("inspecting {}", path.display()))?
            .len();
        if self.written.insert(digest.to_string()) {
            let mut h = header(size, 0o644, tar::EntryType::Regular);
            self.tar
                .append_data(&mut h, blob_name(digest), f)
                .ctx(|| format!("writing layer {digest} to the archive"))?;
        }
        Ok(size)
    }
}

impl ImageStore {
    /// Writes `items` to `out` as a `docker save` tarball (see the module docs).
    pub fn save(&self, items: &[SaveItem], out: impl Write) -> Result<()> {
        let mut w = Writer {
            tar: tar::Builder::new(out),
            written: HashSet::new(),
        };
        w.dir("blobs")?;
        w.dir("blobs/sha256")?;
        let mut docker_manifest = Vec::new();
        let mut index = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for item in items {
            let info = self.get(&item.id)?;
            let config = self.config_blob(&info.id)?;
            let mut layers = Vec::new();
            for diff_id in &info.layers {
                let size = w.blob_file(diff_id, &self.layer_path(diff_id))?;
                layers.push(Blob {
                    digest: diff_id.clone(),
                    size,
                });
            }
            w.blob(&info.id, &config)?;
            let config_blob = Blob {
                digest: info.id.clone(),
                size: config.len() as u64,
            };
            let raw_manifest = manifest(Flavor::OciPlain, &config_blob, &layers);
            let manifest_digest = crate::archive::sha256_digest(&raw_manifest);
            w.blob(&manifest_digest, &raw_manifest)?;
            let descriptor = |annotations: serde_json::Value| {
                json!({"mediaType": OCI_MANIFEST, "digest": manifest_digest,
                       "size": raw_manifest.len(), "annotations": annotations})
            };
            if item.repo_tags.is_empty() {
                index.push(descriptor(json!({})));
            }
            for t in &item.repo_tags {
                let tag = split_tag(t).map_or("latest", |(_, tag)| tag);
                index.push(descriptor(json!({
                    "io.containerd.image.name": qualified(t),
                    "org.opencontainers.image.ref.name": tag,
                })));
                if let (Some((name, tag)), Some(top)) = (split_tag(t), info.layers.last()) {
                    repositories
                        .entry(name.to_string())
                        .or_default()
                        .insert(tag.to_string(), hex_of(top).to_string());
                }
            }
            docker_manifest.push(json!({
                "Config": blob_name(&info.id),
                "RepoTags": item.repo_tags,
                "Layers": info.layers.iter().map(|l| blob_name(l)).collect::<Vec<_>>(),
            }));
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index});
        w.file("index.json", &serde_json::to_vec(&index).expect("JSON"))?;
        w.file(
            "manifest.json",
            &serde_json::to_vec(&docker_manifest).expect("JSON"),
        )?;
        w.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        if !repositories.is_empty() {
            w.file(
                "repositories",
                &serde_json::to_vec(&repositories).expect("JSON"),
            )?;
        }
        let mut out = w.tar.into_inner().ctx(|| "finishing the archive".into())?;
        out.flush().ctx(|| "finishing the archive".into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Read;

    use super::*;
    use crate::test_utils::{config, docker_save, Layer, TestDir};

    /// Two images sharing their bottom layer, loaded into a store.
    fn store_with_images(dir: &TestDir) -> (ImageStore, String, String) {
        let store = ImageStore::open(dir.0.join("a")).unwrap();
        let base = Layer::new().file("bin/sh", b"shell", 0o755, 0, 0).finish();
        let top = Layer::new().file("etc/app", b"app", 0o644, 0, 0).finish();
        let one = store
            .load_archive(
                &docker_save(
                    std::slice::from_ref(&base),
                    std::slice::from_ref(&base),
                    "one:v1",
                )[..],
            )
            .unwrap();
        let two = store
            .load_archive(&docker_save(&[base.clone(), top.clone()], &[base, top], "me/two:v2")[..])
            .unwrap();
        (store, one[0].id.clone(), two[0].id.clone())
    }

    fn members(archive: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut out = HashMap::new();
        let mut t = tar::Archive::new(archive);
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            assert!(
                out.insert(name.clone(), data).is_none(),
                "{name} written twice"
            );
        }
        out
    }

    #[test]
    fn saved_archive_has_dockers_layout_and_loads_back() {
        let dir = TestDir::new("save");
        let (store, one, two) = store_with_images(&dir);
        let items = [
            SaveItem {
                id: one.clone(),
                repo_tags: vec!["one:v1".into()],
            },
            SaveItem {
                id: two.clone(),
                repo_tags: vec!["me/two:v2".into(), "me/two:latest".into()],
            },
        ];
        let mut archive = Vec::new();
        store.save(&items, &mut archive).unwrap();
        let m = members(&archive);

        // Every blob named by its digest; the shared layer once (members() checks).
        for (name, data) in &m {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(
                    crate::archive::sha256_digest(data),
                    format!("sha256:{hex}"),
                    "{name}"
                );
            }
        }
        let manifest: serde_json::Value = serde_json::from_slice(&m["manifest.json"]).unwrap();
        assert_eq!(manifest[0]["Config"], blob_name(&one));
        assert_eq!(
            manifest[1]["RepoTags"],
            json!(["me/two:v2", "me/two:latest"])
        );
        assert_eq!(manifest[1]["Layers"].as_array().unwrap().len(), 2);
        let index: serde_json::Value = serde_json::from_slice(&m["index.json"]).unwrap();
        let names: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                d["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            names,
            [
                "docker.io/library/one:v1",
                "docker.io/me/two:v2",
                "docker.io/me/two:latest"
            ]
        );
        let repos: serde_json::Value = serde_json::from_slice(&m["repositories"]).unwrap();
        assert!(repos["me/two"]["latest"].is_string(), "{repos}");
        assert!(m.contains_key("oci-layout"));

        // Into another store: the same IDs, tags and layers.
        let other = ImageStore::open(dir.0.join("b")).unwrap();
        let loaded = other.load_archive(&archive[..]).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].id, one);
        assert_eq!(loaded[1].id, two);
        assert_eq!(loaded[1].repo_tags, ["me/two:v2", "me/two:latest"]);
        assert_eq!(loaded[1].layers, store.get(&two).unwrap().layers);
        assert_eq!(
            other.config_blob(&two).unwrap(),
            store.config_blob(&two).unwrap()
        );

        // Named by ID: no tags, no repositories file, an unannotated index entry.
        let mut archive = Vec::new();
        store
            .save(
                &[SaveItem {
                    id: one.clone(),
                    repo_tags: vec![],
                }],
                &mut archive,
            )
            .unwrap();
        let m = members(&archive);
        assert!(!m.contains_key("repositories"));
        let loaded = ImageStore::open(dir.0.join("c"))
            .unwrap()
            .load_archive(&archive[..])
            .unwrap();
        assert_eq!(
            (loaded[0].id.as_str(), loaded[0].repo_tags.len()),
            (one.as_str(), 0)
        );
    }

    #[test]
    fn config_blob_is_kept_byte_for_byte() {
        let dir = TestDir::new("save-config");
        let store = ImageStore::open(dir.0.join("s")).unwrap();
        let layer = Layer::new().file("a", b"a", 0o644, 0, 0).finish();
        let loaded = store
            .load_archive(
                &docker_save(
                    std::slice::from_ref(&layer),
                    std::slice::from_ref(&layer),
                    "x:1",
                )[..],
            )
            .unwrap();
        assert_eq!(store.config_blob(&loaded[0].id).unwrap(), config(&[layer]));
        store.remove(&loaded[0].id).unwrap();
        assert!(std::fs::read_dir(dir.0.join("s/configs"))
            .unwrap()
            .next()
            .is_none());
    }
}
