//! `docker commit`: a container's root file system as a new image of its tenant. The guest
//! lists and exports its files through the agent (a stopped container's in a helper VM, as for
//! `cp`: a tenant-written disk is never mounted on the host); hyperd keeps of the export what
//! changed against the image (`changes`), adds whiteouts for what was deleted, and stores that
//! as one layer over the image's, checked as any loaded layer is.

mod changes;

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::{ArchiveOp, ArchiveRequest};
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::archive::changes::{Kind, DELETED};
use super::archive::MAX_MANIFEST_ENTRIES;
use super::Runtime;
use crate::events::Event;
use crate::model::Container;
use crate::{Result, RuntimeError};

/// What `POST /commit` asks for besides the container.
#[derive(Debug, Default)]
pub struct CommitRequest {
    /// `repo:tag` for the new image; none leaves it untagged.
    pub tag: Option<String>,
    pub author: String,
    pub comment: String,
    /// Stop the container's processes while its files are read (Docker's default).
    pub pause: bool,
    /// Dockerfile instructions for the new image's config (`--change`).
    pub changes: Vec<String>,
    /// The request body's config: its fields replace the container's.
    pub config: Option<serde_json::Map<String, Value>>,
}

/// The most of a guest's export a commit spools: its root disk's size, and a tar header
/// (1 KiB with a long name) for each entry `changes` lets it list.
const MAX_EXPORT_BYTES: u64 = crate::metering::ROOT_DISK_BYTES + (MAX_MANIFEST_ENTRIES << 10);

/// Body fields a commit may set (the image config's); any other is refused, not dropped.
const BODY_FIELDS: [&str; 10] = [
    "Cmd",
    "Entrypoint",
    "Env",
    "ExposedPorts",
    "Labels",
    "StopSignal",
    "User",
    "Volumes",
    "WorkingDir",
    "Healthcheck",
];

impl Runtime {
    /// Commits the container `reference` of `tenant`; returns the new image's ID.
    pub async fn commit(
        self: &Arc<Self>,
        tenant: &str,
        reference: &str,
        req: CommitRequest,
    ) -> Result<String> {
        let c = self.get(tenant, reference)?;
        self.check_storage(tenant).await?;
        let parent = self.images.content().get(&c.image_id)?;
        let config = image_config(&c, &parent.config, &req)?;
        let freeze = req.pause && c.is_running();

        let content = self.images.content().clone();
        let (changed, export) = match self.read_files(tenant, reference, freeze, &content).await {
            // The container ended while its files were read through its VM (Docker reads them
            // wherever they are): read them again, from the stopped file system.
            Err(e) if c.is_running() => match self.until_stopped(tenant, reference).await {
                true => self.read_files(tenant, reference, false, &content).await?,
                false => return Err(e),
            },
            r => r?,
        };

        let parent_id = parent.id.clone();
        let info = tokio::task::spawn_blocking(move || -> Result<image::ImageInfo> {
            let layer = content.commit_scratch();
            diff_layer(export.path(), &changed, layer.path())?;
            Ok(content.commit(Some(&parent_id), layer.path(), config)?)
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        let tags: Vec<String> = req
            .tag
            .iter()
            .map(|t| crate::images::normalize(t))
            .collect();
        self.images.add(tenant, &info.id, &tags)?;
        self.events.emit(
            tenant,
            Event::container(&c, "commit", &[("comment", req.comment.clone())]),
        );
        Ok(info.id)
    }

    /// `docker import`: the tar at `tar` (a root file system, plain, gzip or zstd) as a new
    /// one-layer image of `tenant`, its config from `--change` instructions; returns its ID.
    pub async fn import_image(
        self: &Arc<Self>,
        tenant: &str,
        tar: std::path::PathBuf,
        tag: Option<String>,
        instructions: Vec<String>,
        message: String,
    ) -> Result<String> {
        self.check_storage(tenant).await?;
        let mut config = serde_json::Map::new();
        changes::apply(&mut config, &instructions)?;
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let comment = if message.is_empty() {
            "Imported from -".to_string()
        } else {
            message
        };
        let image = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": now,
            "comment": comment,
            "config": config,
            "history": [{"created": now, "created_by": "", "comment": comment}],
        });
        let content = self.images.content().clone();
        let info = tokio::task::spawn_blocking(move || content.commit(None, &tar, image))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        let tags: Vec<String> = tag.iter().map(|t| crate::images::normalize(t)).collect();
        self.images.add(tenant, &info.id, &tags)?;
        Ok(info.id)
    }

    /// The container's changes against its image, and a tar of its root file system.
    async fn read_files(
        self: &Arc<Self>,
        tenant: &str,
        reference: &str,
        freeze: bool,
        content: &image::ImageStore,
    ) -> Result<(Vec<(String, Kind)>, image::LayerScratch)> {
        let changed = self.changes(tenant, reference, freeze).await?;
        let export = content.commit_scratch();
        let request = ArchiveRequest {
            op: ArchiveOp::Export,
            path: "/".into(),
            no_overwrite_dir_non_dir: false,
            chown_user: String::new(),
            freeze,
        };
        let mut a = self.archive(tenant, reference, request).await?;
        let mut file = std::fs::File::create(export.path())
            .map_err(RuntimeError::io("create the commit's export file"))?;
        let mut written = 0u64;
        while let Some(chunk) = a.next_chunk().await? {
            // The guest says what its files are: it gets no more of the node's disk than its
            // root disk could hold, with a tar header for each entry it may have.
            written += chunk.len() as u64;
            if written > MAX_EXPORT_BYTES {
                a.close().await;
                return Err(RuntimeError::Invalid(format!(
                    "the container's file system came to more than {MAX_EXPORT_BYTES} bytes: \
                     more than its root disk holds"
                )));
            }
            file.write_all(&chunk)
                .map_err(RuntimeError::io("write the commit's export file"))?;
        }
        a.close().await;
        Ok((changed, export))
    }

    /// Whether the container is (or within a few seconds is) no longer running.
    async fn until_stopped(&self, tenant: &str, reference: &str) -> bool {
        for _ in 0..100 {
            match self.get(tenant, reference) {
                Ok(c) if c.is_running() => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => return true,
            }
        }
        false
    }
}

/// The new image's config: the parent's, with the container's settings, then the request's
/// body, then its `--change` instructions, and a history entry.
fn image_config(c: &Container, parent: &Value, req: &CommitRequest) -> Result<Value> {
    let mut image = parent.clone();
    let mut config = parent["config"].as_object().cloned().unwrap_or_default();
    let cc = &c.config;
    if !cc.entrypoint.is_empty() {
        config.insert("Entrypoint".into(), json!(cc.entrypoint));
        config.insert("Cmd".into(), json!(cc.cmd));
    } else if !cc.cmd.is_empty() {
        config.insert("Cmd".into(), json!(cc.cmd));
    }
    config.insert("Env".into(), json!(cc.env));
    config.insert("Labels".into(), json!(cc.labels));
    config.insert("WorkingDir".into(), json!(cc.working_dir));
    config.insert("User".into(), json!(cc.user));
    if !cc.exposed_ports.is_empty() {
        config.insert("ExposedPorts".into(), json!(cc.exposed_ports));
    }
    if let Some(signal) = &cc.stop_signal {
        config.insert("StopSignal".into(), json!(signal));
    }
    for (key, value) in req.config.iter().flatten() {
        if value.is_null() {
            continue;
        }
        if !BODY_FIELDS.contains(&key.as_str()) {
            return Err(RuntimeError::Unsupported(format!(
                "commit's config field {key} is not supported: set {} or use --change",
                BODY_FIELDS.join(", ")
            )));
        }
        config.insert(key.clone(), value.clone());
    }
    changes::apply(&mut config, &req.changes)?;

    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
    let created_by = std::iter::once(c.path.as_str())
        .chain(c.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let mut history = image["history"].as_array().cloned().unwrap_or_default();
    let mut entry = json!({"created": now, "created_by": created_by});
    if !req.author.is_empty() {
        entry["author"] = json!(req.author);
        image["author"] = json!(req.author);
    }
    if let Some(image) = image.as_object_mut() {
        image.remove("comment");
    }
    if !req.comment.is_empty() {
        entry["comment"] = json!(req.comment);
        image["comment"] = json!(req.comment);
    }
    history.push(entry);
    image["history"] = json!(history);
    image["config"] = Value::Object(config);
    image["created"] = json!(now);
    image["container"] = json!(c.id);
    Ok(image)
}

/// `/a/b` as a tar member name (`a/b`).
fn member(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Writes to `out` the layer of what changed: the export's entries that were added or
/// modified, and a whiteout (`.wh.<name>`) for each deleted path.
fn diff_layer(export: &Path, changed: &[(String, Kind)], out: &Path) -> Result<()> {
    let fail = |what: &'static str| {
        move |e: std::io::Error| RuntimeError::Internal(format!("commit: {what}: {e}"))
    };
    let keep: HashSet<&str> = changed
        .iter()
        .filter(|(_, kind)| *kind != DELETED)
        .map(|(p, _)| member(p))
        .collect();
    let file = std::fs::File::open(export).map_err(fail("open the export"))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let out = std::fs::File::create(out).map_err(fail("create the layer"))?;
    let mut layer = tar::Builder::new(BufWriter::new(out));
    for entry in tar.entries().map_err(fail("read the export"))? {
        let mut entry = entry.map_err(fail("read the export"))?;
        let path = entry.path().map_err(fail("read the export"))?;
        let name = path.to_string_lossy();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if !keep.contains(name.as_str()) {
            continue;
        }
        let mut header = entry.header().clone();
        match entry.link_name().map_err(fail("read the export"))? {
            Some(target) => {
                let target = target.into_owned();
                layer
                    .append_link(&mut header, &name, target)
                    .map_err(fail("write the layer"))?;
            }
            None => layer
                .append_data(&mut header, &name, &mut entry)
                .map_err(fail("write the layer"))?,
        }
    }
    for (path, _) in changed.iter().filter(|(_, kind)| *kind == DELETED) {
        let (dir, name) = member(path).rsplit_once('/').unwrap_or(("", member(path)));
        let whiteout = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_mode(0o644);
        layer
            .append_data(&mut header, whiteout, std::io::empty())
            .map_err(fail("write the layer"))?;
    }
    layer
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .map_err(fail("write the layer"))
}
