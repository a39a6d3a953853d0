//! What `run`/`create` mount: `-v` (named volumes, anonymous volumes, and Hyper's local paths
//! and URLs copied into new volumes), `--mount` (Docker's Mount objects) and the volumes made
//! for `-v SRC:/path` before the container is created.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::commands::volume_init::{
    init_volumes, is_remote, remove_volumes, resolve_source, InitSource,
};
use crate::transport::{ApiRequest, Client};
use crate::CliError;

/// What one `-v` flag asks for.
#[derive(Debug, PartialEq)]
pub enum VolumeFlag {
    /// `/path`: an anonymous volume (the top-level `Volumes`).
    Anonymous(String),
    /// `name:/path[:ro|rw]` (and anything else the daemon judges): sent as a bind.
    Bind(String),
    /// A local path or a URL, copied into a new volume mounted at `target` (`/path[:ro|rw]`).
    Source { source: String, target: String },
}

/// `SRC:/path[:ro|rw]` -> (`SRC`, `/path[:ro|rw]`): the target is what follows the last colon
/// (before a mode), so URLs may carry ports.
pub fn split_source(spec: &str) -> Option<(&str, String)> {
    let (rest, mode) = match spec.rsplit_once(':') {
        Some((r, m)) if m == "ro" || m == "rw" => (r, Some(m)),
        _ => (spec, None),
    };
    let (src, dst) = rest.rsplit_once(':')?;
    if src.is_empty() || !dst.starts_with('/') {
        return None;
    }
    let target = match mode {
        Some(m) => format!("{dst}:{m}"),
        None => dst.to_owned(),
    };
    Some((src, target))
}

/// Reads one `-v` as Hyper's client does: a URL source (`git://`, `http(s)://`) or an absolute
/// path with a target is copied into a new volume. Better than Hyper's client, a `./` or `../`
/// source is too when it exists here (made absolute against `cwd`); otherwise it goes to the
/// daemon unchanged.
pub fn parse_volume_flag(spec: &str, cwd: &Path) -> Result<VolumeFlag, String> {
    let invalid = || format!("invalid volume specification: '{spec}'");
    let source = |(src, target): (&str, String)| VolumeFlag::Source {
        source: src.to_owned(),
        target,
    };
    if is_remote(spec) {
        return split_source(spec)
            .filter(|(src, _)| is_remote(src))
            .map(source)
            .ok_or_else(invalid);
    }
    if !spec.contains(':') {
        return Ok(VolumeFlag::Anonymous(spec.to_owned()));
    }
    if spec.starts_with('/') {
        return split_source(spec).map(source).ok_or_else(invalid);
    }
    let relative = ["./", "../", ".:", "..:"]
        .iter()
        .any(|p| spec.starts_with(p));
    let local = split_source(spec)
        .filter(|_| relative)
        .and_then(|(src, target)| Some((resolve_source(src, cwd).ok()?, target)));
    Ok(match local {
        Some((source, target)) => VolumeFlag::Source { source, target },
        None => VolumeFlag::Bind(spec.to_owned()),
    })
}

/// All `-v` flags as `HostConfig.Binds` and the top-level `Volumes`. Copied sources are binds
/// `SRC:/path` for now; [`bind_sources`] turns them into volumes.
pub fn volume_flags(
    specs: &[String],
    cwd: &Path,
) -> Result<(Vec<String>, Map<String, Value>), String> {
    let mut binds = Vec::new();
    let mut volumes = Map::new();
    for spec in specs {
        match parse_volume_flag(spec, cwd)? {
            VolumeFlag::Anonymous(p) => {
                volumes.insert(p, json!({}));
            }
            VolumeFlag::Bind(b) => binds.push(b),
            VolumeFlag::Source { source, target } => binds.push(format!("{source}:{target}")),
        }
    }
    Ok((binds, volumes))
}

/// The binds of a create body whose source is a local path or URL, as (index, source, target).
/// After [`volume_flags`], only those start with `/` or a URL scheme.
pub fn source_binds(binds: &Value) -> Vec<(usize, String, String)> {
    binds
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, b)| {
            let b = b.as_str().filter(|b| b.starts_with('/') || is_remote(b))?;
            let (src, target) = split_source(b)?;
            Some((i, src.to_owned(), target))
        })
        .collect()
}

/// The volume made for a `-v SRC:/path`: named by the daemon, labelled to go with its container.
pub fn auto_volume_request() -> ApiRequest {
    ApiRequest::post("/volumes/create").json(&json!({
        "Name": "", "Driver": "hyper", "DriverOpts": null, "Labels": {"autoremove": "true"},
    }))
}

/// Hyper's `-v SRC:/path`: a new volume per such bind, filled from its source, and the bind
/// rewritten to `<volume>:/path`. Every local source is checked before anything is created.
/// Returns the volumes made, for the caller to delete if the container is not created; on its
/// own failure it deletes them itself.
pub async fn bind_sources(client: &Client, body: &mut Value) -> Result<Vec<String>, CliError> {
    let binds = source_binds(&body["HostConfig"]["Binds"]);
    let sources = binds
        .iter()
        .map(|(_, src, _)| resolve_source(src, Path::new("/")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::Msg)?;
    let mut made = Vec::new();
    let result = async {
        let mut init = Vec::new();
        for ((i, _, target), source) in binds.iter().zip(sources) {
            let v: Value = client.json(auto_volume_request()).await?;
            let name = v["Name"].as_str().unwrap_or("").to_owned();
            if name.is_empty() {
                return Err(CliError::Msg("the daemon returned no volume name".into()));
            }
            made.push(name.clone());
            body["HostConfig"]["Binds"][*i] = json!(format!("{name}:{target}"));
            init.push(InitSource {
                volume: name,
                source,
            });
        }
        init_volumes(client, &init).await
    }
    .await;
    if let Err(e) = result {
        remove_volumes(client, &made).await;
        return Err(e);
    }
    Ok(made)
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s.to_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

/// `--mount type=volume,source=v,target=/p[,readonly][,volume-nocopy]` to Docker's Mount
/// object. Other types (bind, tmpfs) are sent too: the daemon says what it does not support.
pub fn parse_mount(spec: &str) -> Result<Value, String> {
    let err = |m: String| format!("invalid argument {spec:?} for \"--mount\" flag: {m}");
    let mut kind = "volume".to_owned();
    let mut mount = Map::new();
    let mut volume = Map::new();
    let mut driver = Map::new();
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_lowercase(), Some(v)),
            None => (field.trim().to_lowercase(), None),
        };
        let pair = || {
            value.ok_or_else(|| err(format!("invalid field '{field}' must be a key=value pair")))
        };
        let flag = || match value {
            None => Ok(true),
            Some(v) => parse_bool(v).ok_or_else(|| err(format!("invalid value for {key}: {v}"))),
        };
        let kv = |v: &str| {
            let (k, v) = v.split_once('=').unwrap_or((v, ""));
            (k.to_owned(), json!(v))
        };
        match key.as_str() {
            "type" => kind = pair()?.to_lowercase(),
            "source" | "src" => {
                mount.insert("Source".into(), json!(pair()?));
            }
            "target" | "destination" | "dst" => {
                mount.insert("Target".into(), json!(pair()?));
            }
            "readonly" | "ro" => {
                mount.insert("ReadOnly".into(), json!(flag()?));
            }
            "volume-nocopy" => {
                volume.insert("NoCopy".into(), json!(flag()?));
            }
            "volume-label" => {
                let (k, v) = kv(pair()?);
                let labels = volume.entry("Labels").or_insert_with(|| json!({}));
                labels[k] = v;
            }
            "volume-driver" => {
                driver.insert("Name".into(), json!(pair()?));
            }
            "volume-opt" => {
                let (k, v) = kv(pair()?);
                let opts = driver.entry("Options").or_insert_with(|| json!({}));
                opts[k] = v;
            }
            _ => return Err(err(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    if !mount.contains_key("Target") {
        return Err(err("target is required".into()));
    }
    if !driver.is_empty() {
        volume.insert("DriverConfig".into(), Value::Object(driver));
    }
    if !volume.is_empty() {
        if kind != "volume" {
            return Err(err(format!(
                "cannot mix 'volume-*' options with mount type '{kind}'"
            )));
        }
        mount.insert("VolumeOptions".into(), Value::Object(volume));
    }
    mount.insert("Type".into(), json!(kind));
    Ok(Value::Object(mount))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flags_like_hyper() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(cwd.join("site")).unwrap();
        let site = cwd.join("site").to_str().unwrap().to_owned();
        let src = |s: &str, t: &str| {
            Ok(VolumeFlag::Source {
                source: s.into(),
                target: t.into(),
            })
        };
        let bind = |s: &str| Ok(VolumeFlag::Bind(s.into()));
        let cases = [
            ("/data", Ok(VolumeFlag::Anonymous("/data".into()))),
            ("vol:/srv", bind("vol:/srv")),
            ("vol:/srv:ro", bind("vol:/srv:ro")),
            ("/host/dir:/srv", src("/host/dir", "/srv")),
            ("/host/dir:/srv:ro", src("/host/dir", "/srv:ro")),
            ("/a:b:/srv", src("/a:b", "/srv")),
            ("./site:/srv", src(&site, "/srv")),
            ("./site/../site:/srv:rw", src(&site, "/srv:rw")),
            ("./missing:/srv", bind("./missing:/srv")),
            (
                "https://github.com/a/r.git:/src",
                src("https://github.com/a/r.git", "/src"),
            ),
            (
                "http://h:8080/r.tgz:/src:ro",
                src("http://h:8080/r.tgz", "/src:ro"),
            ),
            ("git://h/r.git:/src", src("git://h/r.git", "/src")),
            (
                "https://h/r.git",
                Err("invalid volume specification: 'https://h/r.git'".into()),
            ),
            ("/a:ro", Err("invalid volume specification: '/a:ro'".into())),
            ("/a:b", Err("invalid volume specification: '/a:b'".into())),
        ];
        for (i, (spec, want)) in cases.into_iter().enumerate() {
            assert_eq!(parse_volume_flag(spec, &cwd), want, "test[{i}] {spec}");
        }
    }

    #[test]
    fn source_binds_are_found_again() {
        let specs: Vec<String> = [
            "vol:/a",
            "/data",
            "/h:/b:ro",
            "https://h:1/r.git:/c",
            "./nope:/d",
        ]
        .map(String::from)
        .to_vec();
        let (binds, volumes) = volume_flags(&specs, Path::new("/")).unwrap();
        assert_eq!(
            binds,
            ["vol:/a", "/h:/b:ro", "https://h:1/r.git:/c", "./nope:/d"]
        );
        assert_eq!(Value::Object(volumes), json!({"/data": {}}));
        let got = source_binds(&json!(binds));
        let want = [
            (1, "/h".to_owned(), "/b:ro".to_owned()),
            (2, "https://h:1/r.git".to_owned(), "/c".to_owned()),
        ];
        assert_eq!(got, want);
        let r = auto_volume_request();
        assert_eq!(r.path_and_query(), "/v1.44/volumes/create");
        assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap(),
            json!({"Name": "", "Driver": "hyper", "DriverOpts": null, "Labels": {"autoremove": "true"}})
        );
    }

    #[test]
    fn mounts() {
        let cases = [
            (
                "type=volume,source=data,target=/srv",
                Ok(json!({"Type": "volume", "Source": "data", "Target": "/srv"})),
            ),
            (
                "src=data,dst=/srv,readonly,volume-nocopy",
                Ok(
                    json!({"Type": "volume", "Source": "data", "Target": "/srv", "ReadOnly": true,
                          "VolumeOptions": {"NoCopy": true}}),
                ),
            ),
            (
                "source=d,target=/p,ro=false,volume-label=a=b,volume-driver=rbd,volume-opt=size=20",
                Ok(
                    json!({"Type": "volume", "Source": "d", "Target": "/p", "ReadOnly": false,
                          "VolumeOptions": {"Labels": {"a": "b"}, "DriverConfig": {"Name": "rbd", "Options": {"size": "20"}}}}),
                ),
            ),
            (
                "type=bind,source=/h,target=/p",
                Ok(json!({"Type": "bind", "Source": "/h", "Target": "/p"})),
            ),
            (
                "type=tmpfs,destination=/t",
                Ok(json!({"Type": "tmpfs", "Target": "/t"})),
            ),
            ("source=d", Err("target is required")),
            (
                "type=bind,target=/p,volume-nocopy",
                Err("cannot mix 'volume-*' options"),
            ),
            (
                "target=/p,readonly=maybe",
                Err("invalid value for readonly: maybe"),
            ),
            ("target=/p,color=red", Err("unexpected key 'color'")),
            ("target=/p,source", Err("must be a key=value pair")),
        ];
        for (i, (spec, want)) in cases.into_iter().enumerate() {
            match want {
                Ok(v) => assert_eq!(parse_mount(spec), Ok(v), "test[{i}] {spec}"),
                Err(e) => {
                    let got = parse_mount(spec).unwrap_err();
                    assert!(
                        got.contains(e) && got.contains("--mount"),
                        "test[{i}] {got}"
                    );
                }
            }
        }
    }
}
