//! Filling volumes from a local path or a URL (`volume init`, and `run -v SRC:/path`), Hyper's
//! way: `POST /volumes/initialize` names each volume's source; the daemon fetches URLs itself
//! and answers with an upload URL per local source, which gets a tar of it; then
//! `PUT /volumes/uploadfinish` always follows, and the daemon builds the volumes (its errors,
//! e.g. a source bigger than its volume, come back there).
//!
//! The tar is built in memory: every request is signed over the hash of its whole body.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::transport::{ApiRequest, Client};
use crate::CliError;

/// One volume to fill; `source` is a URL or an absolute local path.
#[derive(Debug, Clone, PartialEq)]
pub struct InitSource {
    pub volume: String,
    pub source: String,
}

/// Sources the daemon fetches itself.
pub fn is_remote(source: &str) -> bool {
    ["git://", "http://", "https://"]
        .iter()
        .any(|p| source.starts_with(p))
}

/// A local source as an absolute path (a relative one is taken from `cwd`), checked to be a
/// directory or a regular file before anything is created; URLs are kept as written.
pub fn resolve_source(source: &str, cwd: &Path) -> Result<String, String> {
    if is_remote(source) {
        return Ok(source.to_owned());
    }
    let path = fs::canonicalize(cwd.join(source)).map_err(|e| format!("stat {source}: {e}"))?;
    let meta = fs::metadata(&path).map_err(|e| format!("stat {source}: {e}"))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(format!(
            "unsupported local volume source {source}: not a directory or a regular file"
        ));
    }
    path.into_os_string()
        .into_string()
        .map_err(|_| format!("unsupported local volume source {source}: the path is not UTF-8"))
}

/// `volume init`'s `SOURCE:VOLUME`, split at the last colon (URLs have colons of their own).
pub fn parse_init_arg(arg: &str, cwd: &Path) -> Result<InitSource, String> {
    let (source, volume) = arg
        .rsplit_once(':')
        .filter(|(s, v)| !s.is_empty() && !v.is_empty() && !v.contains('/'))
        .ok_or_else(|| format!("{arg} does not match format SOURCE:VOLUME"))?;
    Ok(InitSource {
        volume: volume.to_owned(),
        source: resolve_source(source, cwd)?,
    })
}

pub fn initialize_request(sources: &[InitSource]) -> ApiRequest {
    let volumes: Vec<Value> = sources
        .iter()
        .map(|s| json!({"Name": s.volume, "Source": s.source}))
        .collect();
    ApiRequest::post("/volumes/initialize").json(&json!({"Reload": false, "Volume": volumes}))
}

/// `POST <url>?cookie=<cookie>` with the tar. Only the URL's path and query are used: the
/// upload goes through our own (signed) connection to the daemon, which accepts that.
pub fn upload_request(url: &str, cookie: &str, tar: Vec<u8>) -> Result<ApiRequest, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("bad upload URL {url:?}: {e}"))?;
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut req = ApiRequest::post(decode(uri.path())).unversioned();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        req = req.query(&decode(k), decode(v));
    }
    Ok(req
        .query("cookie", cookie)
        .body(Bytes::from(tar), "application/x-tar"))
}

pub fn finish_request(session: &str) -> ApiRequest {
    ApiRequest::put("/volumes/uploadfinish").query("session", session)
}

/// The upload body, as Hyper's client makes it: a directory as `.` followed by its entries
/// relative to it, a file under its base name; symlinks stay links.
pub fn tar_source(path: &Path) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    if fs::metadata(path)?.is_dir() {
        b.append_dir(".", path)?;
        append_tree(&mut b, path, Path::new(""))?;
    } else {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        b.append_file(name, &mut fs::File::open(path)?)?;
    }
    b.into_inner()
}

/// Adds the entries below `dir` (named under `rel`) in name order, without following links.
fn append_tree(b: &mut tar::Builder<Vec<u8>>, dir: &Path, rel: &Path) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = rel.join(e.file_name());
        b.append_path_with_name(e.path(), &name)
            .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", e.path().display())))?;
        if e.file_type()?.is_dir() {
            append_tree(b, &e.path(), &name)?;
        }
    }
    Ok(())
}

/// The whole flow for `sources`. Upload failures do not stop it (the session is always
/// finished, as Hyper's client does); they are the error when the finish itself succeeds.
pub async fn init_volumes(client: &Client, sources: &[InitSource]) -> Result<(), CliError> {
    if sources.is_empty() {
        return Ok(());
    }
    let resp: Value = client.json(initialize_request(sources)).await?;
    let session = resp["Session"].as_str().unwrap_or("");
    if session.is_empty() {
        // Only URLs: nothing to upload.
        return Ok(());
    }
    let cookie = resp["Cookie"].as_str().unwrap_or("");
    let mut failed = Vec::new();
    for s in sources.iter().filter(|s| !is_remote(&s.source)) {
        let Some(url) = resp["Uploaders"][&s.volume].as_str() else {
            continue;
        };
        if let Err(e) = upload(client, url, cookie, &s.source).await {
            failed.push(format!(
                "Upload local volume failed: {}",
                crate::error_chain(&e)
            ));
        }
    }
    match client.call(finish_request(session)).await {
        Err(e) => {
            for f in &failed {
                eprintln!("{f}");
            }
            Err(e.into())
        }
        Ok(_) if !failed.is_empty() => Err(CliError::Msg(failed.join("\n"))),
        Ok(_) => Ok(()),
    }
}

async fn upload(client: &Client, url: &str, cookie: &str, source: &str) -> Result<(), CliError> {
    let path = PathBuf::from(source);
    let tar = tokio::task::spawn_blocking(move || tar_source(&path))
        .await
        .map_err(|e| CliError::Msg(e.to_string()))?
        .map_err(|e| CliError::Msg(format!("{source}: {e}")))?;
    client
        .call(upload_request(url, cookie, tar).map_err(CliError::Msg)?)
        .await?;
    Ok(())
}

/// Deletes volumes made for a container that was not created (errors ignored: best effort).
pub async fn remove_volumes(client: &Client, names: &[String]) {
    for name in names {
        let _ = client
            .call(ApiRequest::delete(format!("/volumes/{name}")))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn body_json(r: &ApiRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn init_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir(root.join("site")).unwrap();
        fs::write(root.join("f.txt"), "x").unwrap();
        let abs = |p: &str| root.join(p).to_str().unwrap().to_owned();
        let site = abs("site");
        let ok = |volume: &str, source: &str| {
            Ok(InitSource {
                volume: volume.into(),
                source: source.into(),
            })
        };
        let cases: Vec<(String, Result<InitSource, &str>)> = vec![
            (format!("{site}:web"), ok("web", &site)),
            ("./site:web".into(), ok("web", &site)),
            ("f.txt:v".into(), ok("v", &abs("f.txt"))),
            (
                "https://github.com/a/b.git:src".into(),
                ok("src", "https://github.com/a/b.git"),
            ),
            (
                "git://h:9418/r.git:src".into(),
                ok("src", "git://h:9418/r.git"),
            ),
            ("https://h/r.git".into(), Err("does not match format")),
            ("./site".into(), Err("does not match format")),
            ("./site:".into(), Err("does not match format")),
            ("./nope:v".into(), Err("stat ./nope")),
        ];
        for (i, (arg, want)) in cases.into_iter().enumerate() {
            let got = parse_init_arg(&arg, &root);
            match want {
                Ok(w) => assert_eq!(got, Ok(w), "test[{i}] {arg}"),
                Err(e) => assert!(got.unwrap_err().contains(e), "test[{i}] {arg}"),
            }
        }
    }

    #[test]
    fn requests() {
        let r = initialize_request(&[
            InitSource {
                volume: "v1".into(),
                source: "/src".into(),
            },
            InitSource {
                volume: "v2".into(),
                source: "https://h/r.git".into(),
            },
        ]);
        assert_eq!(r.path_and_query(), "/v1.44/volumes/initialize");
        assert_eq!(
            body_json(&r),
            json!({"Reload": false, "Volume": [{"Name": "v1", "Source": "/src"}, {"Name": "v2", "Source": "https://h/r.git"}]})
        );
        let r = finish_request("s 1");
        assert_eq!(r.method, http::Method::PUT);
        assert_eq!(
            r.path_and_query(),
            "/v1.44/volumes/uploadfinish?session=s%201"
        );
        let cases = [
            (
                "https://api.example:6443/v1.44/volumes/upload/v1",
                "/v1.44/volumes/upload/v1?cookie=c%2Bk",
            ),
            ("/upload/v%201?x=1", "/upload/v%201?x=1&cookie=c%2Bk"),
        ];
        for (i, (url, want)) in cases.iter().enumerate() {
            let r = upload_request(url, "c+k", b"tar".to_vec()).unwrap();
            assert_eq!(r.method, http::Method::POST, "test[{i}]");
            assert_eq!(r.path_and_query(), *want, "test[{i}]");
            assert_eq!(r.headers["content-type"], "application/x-tar", "test[{i}]");
            assert_eq!(&r.body[..], b"tar", "test[{i}]");
        }
    }

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                (path, e.header().entry_type(), link)
            })
            .collect()
    }

    #[test]
    fn tar_of_a_directory_and_a_file() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::write(root.join("a.txt"), "hello").unwrap();
        fs::write(root.join("sub/b.txt"), "b").unwrap();
        symlink("a.txt", root.join("link")).unwrap();
        symlink("/nowhere", root.join("sub/dangling")).unwrap();
        let got = entries(&tar_source(&root).unwrap());
        let want = [
            (".", Directory, ""),
            ("a.txt", Regular, ""),
            ("link", Symlink, "a.txt"),
            ("sub", Directory, ""),
            ("sub/b.txt", Regular, ""),
            ("sub/dangling", Symlink, "/nowhere"),
            ("sub/deeper", Directory, ""),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                (g.0.trim_end_matches('/'), g.1, g.2.as_str()),
                w,
                "test[{i}]"
            );
        }
        let file = tar_source(&root.join("a.txt")).unwrap();
        let mut a = tar::Archive::new(&file[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("a.txt"));
        let mut text = String::new();
        io::Read::read_to_string(&mut e, &mut text).unwrap();
        assert_eq!(text, "hello");
    }
}
