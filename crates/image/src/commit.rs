//! A new image from a container (`docker commit`): the parent image's layers, one more layer
//! with what the container changed, and a config its caller wrote.

use std::fs;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::{archive, full_hex, layer, unpack, ImageInfo, ImageStore, TempPath};

/// Where a commit's layer tar is written before [`ImageStore::commit`] checks and stores it.
pub struct LayerScratch(TempPath);

impl LayerScratch {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl ImageStore {
    /// A scratch file under the store's `tmp/` for the layer a commit writes: removed when
    /// dropped, or by [`ImageStore::open`] if hyperd dies first.
    pub fn commit_scratch(&self) -> LayerScratch {
        LayerScratch(self.temp("commit-layer"))
    }

    /// Stores the image made of `parent`'s layers (none for `docker import`) and the layer tar
    /// at `layer_tar` (plain, gzip or zstd), with
    /// `config` (an image config: its `rootfs.diff_ids` and `created` are set here). The layer
    /// is checked as a loaded one is (names and links inside the root, links to something),
    /// so a guest's tar is never trusted.
    pub fn commit(
        &self,
        parent: Option<&str>,
        layer_tar: &Path,
        mut config: serde_json::Value,
    ) -> Result<ImageInfo> {
        let parent = parent.map(|p| self.get(p)).transpose()?;
        let work = self.temp("commit");
        let got = layer::ingest(layer_tar, work.path(), "the container's changes")?;
        let mut layers: Vec<_> = parent
            .iter()
            .flat_map(|p| &p.layers)
            .map(|d| (self.layer_path(d), d.clone()))
            .collect();
        layers.push((work.path().to_path_buf(), got.diff_id.clone()));
        unpack::check_layers(&layers)?;

        let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
        config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": diff_ids});
        let blob = serde_json::to_vec(&config).expect("a JSON value serializes");
        let info = ImageInfo {
            id: archive::sha256_digest(&blob),
            repo_tags: vec![],
            created: config["created"].as_str().map(str::to_string),
            config,
            size: parent.as_ref().map_or(0, |p| p.size) + got.size,
            layers: diff_ids,
            parent: parent.as_ref().map(|p| p.id.clone()).unwrap_or_default(),
        };
        let _guard = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let dest = self.layer_path(&got.diff_id);
        if !dest.exists() {
            fs::rename(work.path(), &dest).ctx(|| format!("storing layer {}", got.diff_id))?;
        }
        let hex = full_hex(&info.id).expect("computed digest").to_string();
        self.write_atomic(&self.config_path(&hex), &blob)?;
        let json = serde_json::to_vec_pretty(&info).expect("ImageInfo serializes");
        self.write_atomic(&self.image_path(&hex), &json)?;
        tracing::info!(id = %info.id, parent = %info.parent, "committed image");
        Ok(info)
    }
}
