//! What a container create asks of volumes, from Docker's many spellings (`Binds`, `Mounts`,
//! `Config.Volumes`, the image's `VOLUME`s) to one list. Pure: resolving names to volumes and
//! `VolumesFrom` to another container's mounts is the runtime's job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Result, RuntimeError};

/// Hyper's per-container limit (and the VM's volume slots).
pub const MAX_PER_CONTAINER: usize = agent_proto::VOLUME_SLOTS as usize;

/// Hyper's label that turns off anonymous volumes for the image's `VOLUME`s and `-v /path`.
pub const NOAUTO_LABEL: &str = "sh_hyper_noauto_volume";

/// Docker's `HostConfig.Mounts[]` entry (the fields that matter to a volume).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountSpec {
    #[serde(rename = "Type")]
    pub kind: String,
    pub source: String,
    pub target: String,
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    /// For `Type: tmpfs` (see `crate::tmpfs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    pub size_bytes: i64,
    /// Permission bits (Docker sends the number, e.g. 448 for 0700).
    pub mode: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    pub no_copy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_config: Option<DriverConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct DriverConfig {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

/// One volume the container wants at `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `None`: a new anonymous volume.
    pub name: Option<String>,
    pub destination: String,
    pub read_only: bool,
    pub no_copy: bool,
    /// Driver and options for a volume this create makes (`--mount`'s `volume-driver`,
    /// `volume-opt`).
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "invalid volume name {name:?}: names are 2 or more of [a-zA-Z0-9_.-], starting with a letter or digit"
        )))
    }
}

/// A container path a volume can be mounted at: absolute, normalised, not `/`.
pub fn check_destination(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(RuntimeError::Invalid(format!(
            "invalid mount path {path:?}: it must be absolute"
        )));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(RuntimeError::Invalid(format!(
            "invalid mount path {path:?}: '..' is not allowed"
        )));
    }
    if parts.is_empty() {
        return Err(RuntimeError::Invalid(
            "invalid mount path \"/\": a volume cannot replace the container's root".into(),
        ));
    }
    if path.contains('\0') {
        return Err(RuntimeError::Invalid("invalid mount path: NUL byte".into()));
    }
    Ok(format!("/{}", parts.join("/")))
}

fn host_bind_refused(source: &str) -> RuntimeError {
    RuntimeError::Unsupported(format!(
        "host bind mounts are not supported ({source:?}): a VM cannot reach the host's files; use a named volume (-v NAME:/path), or let hyper's CLI upload a directory into a new volume (hyper run -v ./dir:/path)"
    ))
}

/// `name:/dest[:mode]` as the Docker CLI puts `-v` in `HostConfig.Binds`.
pub fn parse_bind(bind: &str) -> Result<Wanted> {
    let parts: Vec<&str> = bind.split(':').collect();
    let (source, dest, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => {
            return Err(RuntimeError::Invalid(format!(
                "invalid volume specification {bind:?}: use NAME:/path[:ro]"
            )))
        }
    };
    if source.starts_with(['/', '.', '~']) {
        return Err(host_bind_refused(source));
    }
    check_name(source)?;
    let (mut read_only, mut no_copy) = (false, false);
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => no_copy = true,
            "z" | "Z" | "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"
            | "delegated" | "cached" | "consistent" => {
                return Err(RuntimeError::Unsupported(format!(
                    "the volume mode {m:?} of {bind:?} is not supported (a volume is a disk of the container's own VM)"
                )))
            }
            _ => {
                return Err(RuntimeError::Invalid(format!(
                    "invalid mode {m:?} in volume specification {bind:?}: use ro, rw or nocopy"
                )))
            }
        }
    }
    Ok(Wanted {
        name: Some(source.to_string()),
        destination: check_destination(dest)?,
        read_only,
        no_copy,
        driver: String::new(),
        options: BTreeMap::new(),
    })
}

/// One `--mount` entry.
pub fn parse_mount(m: &MountSpec) -> Result<Wanted> {
    match m.kind.as_str() {
        "volume" | "" => {}
        "bind" => return Err(host_bind_refused(&m.source)),
        other => {
            return Err(RuntimeError::Unsupported(format!(
                "mounts of type {other:?} are not supported: only type=volume"
            )))
        }
    }
    let name = (!m.source.is_empty()).then(|| m.source.clone());
    if let Some(n) = &name {
        check_name(n)?;
    }
    let opts = m.volume_options.clone().unwrap_or_default();
    if opts.labels.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(RuntimeError::Unsupported(
            "--mount volume-label is not supported: label the volume with `volume create --label`"
                .into(),
        ));
    }
    let driver = opts.driver_config.unwrap_or_default();
    Ok(Wanted {
        name,
        destination: check_destination(&m.target)?,
        read_only: m.read_only,
        no_copy: opts.no_copy,
        driver: driver.name,
        options: driver.options.unwrap_or_default(),
    })
}

/// Everything the create asks for, in Docker's precedence: `Binds` and `Mounts` first, then
/// `Config.Volumes` (`-v /path`) and the image's `VOLUME`s as anonymous volumes where no other
/// mount has the path (none at all with [`NOAUTO_LABEL`]). `from_others` are the mounts
/// `VolumesFrom` brought (resolved by the caller). Duplicate paths and more than
/// [`MAX_PER_CONTAINER`] volumes are refused.
pub fn collect(
    binds: &[String],
    mounts: &[MountSpec],
    from_others: Vec<Wanted>,
    anonymous_paths: &[String],
    image_paths: &[String],
    noauto: bool,
) -> Result<Vec<Wanted>> {
    let mut wanted: Vec<Wanted> = Vec::new();
    let explicit = binds
        .iter()
        .map(|b| parse_bind(b))
        .chain(mounts.iter().map(parse_mount));
    for w in explicit {
        let w = w?;
        if wanted.iter().any(|x| x.destination == w.destination) {
            return Err(RuntimeError::Invalid(format!(
                "Duplicate mount point: {}",
                w.destination
            )));
        }
        wanted.push(w);
    }
    for w in from_others {
        if !wanted.iter().any(|x| x.destination == w.destination) {
            wanted.push(w);
        }
    }
    if !noauto {
        for path in anonymous_paths.iter().chain(image_paths) {
            let destination = check_destination(path)?;
            if !wanted.iter().any(|x| x.destination == destination) {
                wanted.push(Wanted {
                    name: None,
                    destination,
                    read_only: false,
                    no_copy: false,
                    driver: String::new(),
                    options: BTreeMap::new(),
                });
            }
        }
    }
    if wanted.len() > MAX_PER_CONTAINER {
        return Err(RuntimeError::Invalid(format!(
            "a container has at most {MAX_PER_CONTAINER} volumes (Hyper's limit); this one asks for {}",
            wanted.len()
        )));
    }
    Ok(wanted)
}

/// `ctr[:ro|:rw]` of `--volumes-from`.
pub fn parse_volumes_from(spec: &str) -> Result<(String, Option<bool>)> {
    match spec.rsplit_once(':') {
        Some((c, "ro")) => Ok((c.to_string(), Some(true))),
        Some((c, "rw")) => Ok((c.to_string(), Some(false))),
        Some((_, m)) => Err(RuntimeError::Invalid(format!(
            "invalid mode {m:?} in --volumes-from {spec:?}: use ro or rw"
        ))),
        None => Ok((spec.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds() {
        let ok = [
            ("data:/srv", "data", "/srv", false, false),
            ("data:/srv/:ro", "data", "/srv", true, false),
            (
                "my.vol-1:/a//b/./c:rw,nocopy",
                "my.vol-1",
                "/a/b/c",
                false,
                true,
            ),
        ];
        for (i, (bind, name, dest, ro, nocopy)) in ok.iter().enumerate() {
            let w = parse_bind(bind).unwrap_or_else(|e| panic!("test[{i}] {bind}: {e}"));
            assert_eq!(w.name.as_deref(), Some(*name), "test[{i}]");
            assert_eq!(w.destination, *dest, "test[{i}]");
            assert_eq!((w.read_only, w.no_copy), (*ro, *nocopy), "test[{i}]");
        }
        let refused = [
            ("/etc:/host", "host bind"),
            ("./site:/www", "host bind"),
            ("data:/srv:z", "not supported"),
            ("data:/srv:rx", "invalid mode"),
            ("data:srv", "absolute"),
            ("data:/", "root"),
            ("data:/a/../b", ".."),
            ("-x:/a", "invalid volume name"),
            ("a", "specification"),
        ];
        for (i, (bind, why)) in refused.iter().enumerate() {
            let e = parse_bind(bind).expect_err(bind).to_string();
            assert!(e.contains(why), "test[{i}] {bind}: {e}");
        }
    }

    #[test]
    fn collect_orders_dedups_and_limits() {
        let binds = vec!["a1:/data".to_string()];
        let mounts = vec![MountSpec {
            kind: "volume".into(),
            source: String::new(),
            target: "/cache".into(),
            read_only: true,
            volume_options: Some(VolumeOptions {
                no_copy: true,
                ..Default::default()
            }),
            tmpfs_options: None,
        }];
        let w = collect(
            &binds,
            &mounts,
            vec![],
            &["/logs".into()],
            &["/data".into(), "/img".into()],
            false,
        )
        .unwrap();
        let dests: Vec<&str> = w.iter().map(|w| w.destination.as_str()).collect();
        assert_eq!(dests, ["/data", "/cache", "/logs", "/img"]);
        assert_eq!(w[0].name.as_deref(), Some("a1"));
        assert!(w[1].name.is_none() && w[1].read_only && w[1].no_copy);
        // noauto: only what was named.
        let w = collect(
            &binds,
            &[],
            vec![],
            &["/logs".into()],
            &["/img".into()],
            true,
        )
        .unwrap();
        assert_eq!(w.len(), 1);
        let dup = collect(
            &["a1:/d".into(), "a2:/d/".into()],
            &[],
            vec![],
            &[],
            &[],
            false,
        );
        assert!(dup
            .unwrap_err()
            .to_string()
            .contains("Duplicate mount point: /d"));
        let five: Vec<String> = (0..5).map(|i| format!("v{i}:/m{i}")).collect();
        let e = collect(&five, &[], vec![], &[], &[], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 4 volumes"), "{e}");
        let bind = MountSpec {
            kind: "bind".into(),
            source: "/etc".into(),
            target: "/e".into(),
            ..Default::default()
        };
        assert!(matches!(
            collect(&[], &[bind], vec![], &[], &[], false),
            Err(RuntimeError::Unsupported(_))
        ));
    }

    #[test]
    fn volumes_from() {
        assert_eq!(parse_volumes_from("db").unwrap(), ("db".into(), None));
        assert_eq!(
            parse_volumes_from("db:ro").unwrap(),
            ("db".into(), Some(true))
        );
        assert!(parse_volumes_from("db:xx").is_err());
    }
}
