//! `hyper cp`: Docker's `cp`, both ways, through `GET`/`HEAD`/`PUT /containers/{id}/archive`.
//! Tars are packed and unpacked here, with Docker's rules for where the copy lands.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use clap::Args;
use http_body_util::BodyExt;
use serde_json::Value;

use super::Ctx;
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long = "archive")]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// CONTAINER:SRC_PATH or a local SRC_PATH ("-": a tar on standard input)
    pub src: String,
    /// CONTAINER:DEST_PATH or a local DEST_PATH ("-": a tar to standard output)
    pub dest: String,
}

/// `CONTAINER:PATH` or a local path (a `/` or `.` before any `:` means local, as Docker has it).
fn split(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    arg.split_once(':').filter(|(c, _)| !c.is_empty())
}

/// What the stat header says about a container path.
struct Stat {
    is_dir: bool,
    /// A symlink's target, resolved in the container.
    link_target: Option<String>,
}

fn parse_stat(h: Option<&hyper::header::HeaderValue>) -> Result<Stat, CliError> {
    let bad = || CliError::Msg("the daemon sent no usable X-Docker-Container-Path-Stat".into());
    let raw = base64::engine::general_purpose::STANDARD
        .decode(h.ok_or_else(bad)?.as_bytes())
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let mode = v["mode"].as_u64().ok_or_else(bad)?;
    Ok(Stat {
        is_dir: mode & (1 << 31) != 0,
        link_target: v["linkTarget"]
            .as_str()
            .filter(|t| mode & (1 << 27) != 0 && !t.is_empty())
            .map(String::from),
    })
}

fn broken(e: hyper::Error) -> CliError {
    CliError::Msg(format!("the archive broke off: {e}"))
}

/// An anonymous scratch file (unlinked at once).
fn spool_file() -> Result<std::fs::File, CliError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!(".hyper-cp-{}-{nanos}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

fn archive_path(container: &str) -> String {
    format!("/containers/{container}/archive")
}

pub async fn cp(ctx: &Ctx, a: CpArgs) -> Result<i32, CliError> {
    match (split(&a.src), split(&a.dest)) {
        (Some((c, path)), None) => copy_out(ctx, &a, c, path).await,
        (None, Some((c, path))) => copy_in(ctx, &a, c, path).await,
        (Some(_), Some(_)) => Err(CliError::Msg(
            "copying between containers is not supported".into(),
        )),
        (None, None) => Err(CliError::Msg(
            "must specify at least one container source".into(),
        )),
    }
}

async fn copy_out(ctx: &Ctx, a: &CpArgs, container: &str, path: &str) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let mut src = path.to_string();
    // -L: the link's target is copied, under the link's name (Docker's rebase).
    let mut link_name = None;
    if a.follow_link {
        let head = client
            .send_raw(
                ApiRequest::new(hyper::Method::HEAD, archive_path(container)).query("path", path),
            )
            .await?;
        // Anything but a link: the GET below copies it, or says what is wrong.
        let target = match head.status().is_success() {
            true => parse_stat(head.headers().get("x-docker-container-path-stat"))?.link_target,
            false => None,
        };
        if let Some(target) = target {
            link_name = Path::new(path).file_name().map(|n| n.to_os_string());
            src = target;
        }
    }
    let resp = client
        .send(ApiRequest::get(archive_path(container)).query("path", &src))
        .await?;
    let stat = parse_stat(resp.headers().get("x-docker-container-path-stat"))?;
    let mut body = resp.into_body();
    if a.dest == "-" {
        let mut out = std::io::stdout().lock();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(broken)?.into_data() {
                out.write_all(&data)?;
            }
        }
        out.flush()?;
        return Ok(0);
    }
    // Spooled to a file: a big archive does not sit in memory.
    let mut spool = spool_file()?;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(broken)?.into_data() {
            spool.write_all(&data)?;
        }
    }
    use std::io::Seek;
    spool.seek(std::io::SeekFrom::Start(0))?;
    let dest = PathBuf::from(&a.dest);
    let contents_only = src.ends_with("/.");
    // Docker's rules: into an existing directory under the source's name; otherwise as the
    // destination's name, in its parent.
    let (into, rename) = if dest.is_dir() {
        (dest.clone(), link_name)
    } else if contents_only {
        std::fs::create_dir_all(&dest)?;
        (dest.clone(), None)
    } else {
        if a.dest.ends_with('/') {
            return Err(CliError::Msg(format!(
                "destination directory {} does not exist",
                a.dest
            )));
        }
        if stat.is_dir && dest.exists() {
            return Err(CliError::Msg(format!(
                "cannot copy a directory to the file {}",
                a.dest
            )));
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| CliError::Msg(format!("invalid destination {}", a.dest)))?;
        (parent, Some(name.to_os_string()))
    };
    unpack(spool, &into, rename.as_deref(), a.archive)?;
    Ok(0)
}

/// Extract `tar` into `dir`, the first component of every entry renamed to `rename` when
/// given; owners are kept only in archive mode.
fn unpack(
    tar_data: impl Read,
    dir: &Path,
    rename: Option<&std::ffi::OsStr>,
    keep_owners: bool,
) -> Result<(), CliError> {
    let mut ar = tar::Archive::new(tar_data);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(keep_owners);
    ar.set_overwrite(true);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut parts = path
            .components()
            .filter(|c| !matches!(c, Component::CurDir));
        let target = match (rename, parts.next()) {
            (Some(new), Some(_)) => {
                let mut p = PathBuf::from(new);
                p.extend(parts);
                p
            }
            _ => path.clone(),
        };
        if target.as_os_str().is_empty() {
            continue;
        }
        let dst = dir.join(&target);
        if let Ok(md) = std::fs::symlink_metadata(&dst) {
            if !(md.is_dir() && entry.header().entry_type().is_dir()) {
                if md.is_dir() {
                    std::fs::remove_dir_all(&dst)?;
                } else {
                    std::fs::remove_file(&dst)?;
                }
            }
        }
        if rename.is_some() {
            entry.set_preserve_permissions(true);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)?;
            }
            entry.unpack(&dst)?;
        } else {
            entry.unpack_in(dir)?;
        }
    }
    Ok(())
}

async fn copy_in(ctx: &Ctx, a: &CpArgs, container: &str, path: &str) -> Result<i32, CliError> {
    let client = ctx.client()?;
    if a.src == "-" {
        let mut tar_data = Vec::new();
        std::io::stdin().lock().read_to_end(&mut tar_data)?;
        put(ctx, container, path, tar_data, a.archive).await?;
        return Ok(0);
    }
    let src = PathBuf::from(&a.src);
    let src_md = if a.follow_link {
        std::fs::metadata(&src)
    } else {
        std::fs::symlink_metadata(&src)
    }
    .map_err(|e| CliError::Msg(format!("{}: {e}", a.src)))?;
    let contents_only = a.src.ends_with("/.");
    let head = client
        .send_raw(ApiRequest::new(hyper::Method::HEAD, archive_path(container)).query("path", path))
        .await?;
    let dest_dir = match head.status() {
        s if s.is_success() => {
            Some(parse_stat(head.headers().get("x-docker-container-path-stat"))?.is_dir)
        }
        hyper::StatusCode::NOT_FOUND => None,
        s => {
            // HEAD carries no body: GET says why.
            let _ = s;
            client
                .send(ApiRequest::get(archive_path(container)).query("path", path))
                .await?;
            None
        }
    };
    let (put_dir, top) = match dest_dir {
        Some(true) => (path.to_string(), None),
        Some(false) if src_md.is_dir() => {
            return Err(CliError::Msg(format!(
                "cannot copy a directory to the file {container}:{path}"
            )))
        }
        _ if path.ends_with('/') => {
            return Err(CliError::Msg(format!(
                "destination directory {container}:{path} does not exist"
            )))
        }
        _ => {
            let p = Path::new(path);
            let parent = p
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "/".into());
            let name = p
                .file_name()
                .ok_or_else(|| CliError::Msg(format!("invalid destination {path}")))?;
            (parent, Some(name.to_os_string()))
        }
    };
    let top = match (top, contents_only) {
        (Some(t), _) => PathBuf::from(t),
        (None, true) => PathBuf::from("."),
        (None, false) => PathBuf::from(
            src.file_name()
                .ok_or_else(|| CliError::Msg(format!("invalid source {}", a.src)))?,
        ),
    };
    let tar_data = pack(&src, &top, a.follow_link, a.archive)?;
    put(ctx, container, &put_dir, tar_data, a.archive).await?;
    Ok(0)
}

async fn put(
    ctx: &Ctx,
    container: &str,
    dir: &str,
    tar_data: Vec<u8>,
    archive: bool,
) -> Result<(), CliError> {
    let req = ApiRequest::put(archive_path(container))
        .query("path", dir)
        .flag("copyUIDGID", archive)
        .body(tar_data.into(), "application/x-tar");
    ctx.client()?.call(req).await?;
    Ok(())
}

/// A tar of `src` whose top entry is `top`. Owners are root's unless in archive mode (Docker:
/// what is copied in belongs to root).
fn pack(src: &Path, top: &Path, follow_top: bool, keep_owners: bool) -> Result<Vec<u8>, CliError> {
    let mut b = tar::Builder::new(Vec::new());
    let mut stack = vec![(src.to_path_buf(), top.to_path_buf(), follow_top)];
    while let Some((path, name, follow)) = stack.pop() {
        let md = if follow {
            std::fs::metadata(&path)?
        } else {
            std::fs::symlink_metadata(&path)?
        };
        let mut h = tar::Header::new_gnu();
        h.set_metadata(&md);
        if !keep_owners {
            h.set_uid(0);
            h.set_gid(0);
        }
        if md.is_dir() {
            b.append_data(&mut h, &name, std::io::empty())?;
            let mut children: Vec<_> = std::fs::read_dir(&path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            children.sort();
            for c in children.into_iter().rev() {
                stack.push((path.join(&c), name.join(&c), false));
            }
        } else if md.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            b.append_link(&mut h, &name, &target)?;
        } else if md.is_file() {
            b.append_data(&mut h, &name, std::fs::File::open(&path)?)?;
        }
        // Sockets, fifos and devices are left out.
    }
    Ok(b.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_are_told_from_local_ones() {
        assert_eq!(split("web:/etc/hostname"), Some(("web", "/etc/hostname")));
        assert_eq!(split("./a:b"), None);
        assert_eq!(split("/tmp/x"), None);
        assert_eq!(split("-"), None);
        assert_eq!(split("file"), None);
    }

    #[test]
    fn a_packed_tree_unpacks_under_a_new_name() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), b"hi").unwrap();
        let tar_data = pack(&src, Path::new("src"), false, false).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        unpack(
            &tar_data[..],
            &out,
            Some(std::ffi::OsStr::new("renamed")),
            false,
        )
        .unwrap();
        assert_eq!(std::fs::read(out.join("renamed/sub/f")).unwrap(), b"hi");
    }
}
