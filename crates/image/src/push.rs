//! Pushing images to registries through the OCI distribution API, as `docker push` does.
//!
//! Two steps, as for pulls, so the API can answer with a status before it streams:
//! - [`Puller::push_session`] pings the registry and authorizes for `pull,push` on the
//!   repository (anonymous, basic, or the bearer-token flow; see [`pull`](crate::pull)), through
//!   the caller's [`Reach`](crate::fetch::Reach): a tenant's push goes only where its pulls may go.
//! - [`Puller::push`] uploads one tag: each layer is gzipped from the stored tar into a temp
//!   file (gzip with fixed settings and no name or time, so the same layer always gives the
//!   same blob and a second push finds it; the blob's digest is remembered, so a layer pushed
//!   before is looked for in the registry before it is compressed again), `HEAD`ed and, if
//!   the registry lacks it, uploaded
//!   (`POST /blobs/uploads/`, then one `PUT <Location>?digest=` with the whole blob streamed
//!   from the file); then the config blob, byte for byte as pulled or loaded (its digest is
//!   the image ID), and last a Docker v2 schema 2 manifest `PUT` under the tag.
//!
//! Progress messages are Docker's ("Preparing", "Pushing" with bytes, "Pushed", "Layer
//! already exists"). Errors, like a pull's, quote nothing the registry sent but status codes
//! and the distribution spec's error codes; a refusal of the credentials is
//! [`PullError::Unauthorized`] ("push access denied for ...").

use std::io::{self, Read, Write};
use std::path::PathBuf;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{ImageError, IoContext};
use crate::fetch::{read_capped, Http};
use crate::login::net_error;
use crate::manifest::{manifest, Blob, Flavor};
use crate::pull::{
    code_words, error_codes, parse_reference, short, Access, Auth, Credentials, Progress,
    PullError, Puller, Session, MAX_ERROR_ANSWER,
};
use crate::{ImageStore, TempPath};

/// A "Pushing" progress message at most every this many bytes.
const PROGRESS_STEP: u64 = 512 << 10;
/// Bytes read from a blob file per chunk of an upload.
const UPLOAD_CHUNK: usize = 64 << 10;

/// A registry session with push access to one repository.
pub struct PushSession {
    session: Session,
    /// `registry/repository`, as Docker shows it ("The push refers to repository [..]").
    pub name: String,
}

/// What one pushed tag became in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub tag: String,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// Writes through to `inner`, hashing and counting.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Gzips `src` into `dest`: the blob a push uploads for a stored layer, and its digest and size.
fn gzip_blob(src: impl Read, dest: impl Write) -> io::Result<Blob> {
    let hashing = Hashing {
        inner: dest,
        hash: Sha256::new(),
        written: 0,
    };
    // GzBuilder writes no name and mtime 0: the same layer always makes the same blob.
    let mut enc = flate2::GzBuilder::new().write(hashing, flate2::Compression::default());
    let mut src = src;
    io::copy(&mut src, &mut enc)?;
    let mut hashing = enc.finish()?;
    hashing.flush()?;
    Ok(Blob {
        digest: format!("sha256:{}", hex::encode(hashing.hash.finalize())),
        size: hashing.written,
    })
}

impl ImageStore {
    pub(crate) fn pushed_path(&self, hex: &str) -> PathBuf {
        self.root.join("pushed").join(format!("{hex}.json"))
    }

    /// The gzip blob an earlier push made of layer `diff_id`, if any (Docker keeps the same
    /// map, so a layer a registry has is not compressed again to be found there).
    fn pushed_blob(&self, diff_id: &str) -> Option<Blob> {
        let hex = crate::full_hex(diff_id)?;
        let raw = std::fs::read(self.pushed_path(hex)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
        let digest = v["digest"]
            .as_str()
            .filter(|d| crate::full_hex(d).is_some())?;
        Some(Blob {
            digest: digest.to_string(),
            size: v["size"].as_u64()?,
        })
    }

    /// The gzip blob of the stored layer `diff_id`, in a temp file of this store; remembered
    /// for [`ImageStore::pushed_blob`].
    fn gzip_layer(&self, diff_id: &str) -> crate::Result<(TempPath, Blob)> {
        let src = self.layer_path(diff_id);
        let tmp = self.temp("push");
        let input = std::fs::File::open(&src).ctx(|| format!("opening {}", src.display()))?;
        let out = std::fs::File::create(tmp.path())
            .ctx(|| format!("creating {}", tmp.path().display()))?;
        let blob = gzip_blob(
            io::BufReader::with_capacity(1 << 16, input),
            io::BufWriter::with_capacity(1 << 16, out),
        )
        .ctx(|| format!("compressing layer {diff_id}"))?;
        if let Some(hex) = crate::full_hex(diff_id) {
            let record = serde_json::json!({"digest": blob.digest, "size": blob.size});
            self.write_atomic(&self.pushed_path(hex), record.to_string().as_bytes())?;
        }
        Ok((tmp, blob))
    }
}

/// Sorts a registry's failure answer to the push step `what` of `shown`.
async fn refusal(resp: reqwest::Response, shown: &str, what: &str) -> PullError {
    let status = resp.status();
    let body = read_capped(resp, MAX_ERROR_ANSWER)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let codes = error_codes(&body);
    let mut detail = codes
        .iter()
        .map(|c| code_words(c))
        .collect::<Vec<_>>()
        .join("; ");
    detail = if detail.is_empty() {
        format!("the registry answered {status}")
    } else {
        format!("{detail} (the registry answered {status})")
    };
    let unauthorized = status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || codes
            .iter()
            .any(|c| matches!(*c, "UNAUTHORIZED" | "DENIED"));
    if unauthorized {
        PullError::Unauthorized(format!("push access denied for {shown}: {detail}"))
    } else {
        PullError::Registry(format!("pushing {shown}: {what}: {detail}"))
    }
}

impl Session {
    fn repo_url(&self, path: &str) -> String {
        format!("{}{}/{path}", self.base, self.repository)
    }

    /// Sends `method url`, built by `make`, with the session's authorization; a 401 to a bearer
    /// token asks for a new token and tries once more (`make` builds the body again).
    async fn send(
        &self,
        method: Method,
        url: &str,
        make: impl Fn(reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, PullError>,
        shown: &str,
        what: &str,
    ) -> Result<reqwest::Response, PullError> {
        let context = format!("pushing {shown}: {what}");
        let net = net_error(&context);
        let mut retried = false;
        loop {
            let mut req = make(self.http.request(method.clone(), url).map_err(&net)?)?;
            let auth = self.auth.read().unwrap_or_else(|e| e.into_inner()).clone();
            req = match &auth {
                Auth::None => req,
                Auth::Basic(c) => req.basic_auth(&c.username, Some(&c.password)),
                Auth::Bearer(t) => req.bearer_auth(t),
            };
            let resp = Http::send(req).await.map_err(&net)?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && matches!(auth, Auth::Bearer(_))
                && !retried
            {
                retried = true;
                let token = self.token(shown).await?;
                *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Auth::Bearer(token);
                continue;
            }
            return Ok(resp);
        }
    }

    /// Whether the repository already has blob `digest`.
    async fn has_blob(&self, digest: &str, shown: &str) -> Result<bool, PullError> {
        let what = "checking for a blob";
        let url = self.repo_url(&format!("blobs/{digest}"));
        let resp = self.send(Method::HEAD, &url, Ok, shown, what).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(refusal(resp, shown, what).await),
        }
    }

    /// Uploads `blob`, whose body `body` makes: a session opened by POST, closed by one PUT.
    async fn upload(
        &self,
        blob: &Blob,
        body: impl Fn() -> Result<reqwest::Body, PullError>,
        shown: &str,
    ) -> Result<(), PullError> {
        let what = "starting a blob upload";
        let start = self.repo_url("blobs/uploads/");
        let resp = self
            .send(
                Method::POST,
                &start,
                |r| Ok(r.header(CONTENT_LENGTH, 0)),
                shown,
                what,
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(refusal(resp, shown, what).await);
        }
        let bad_location = || {
            PullError::Registry(format!(
                "pushing {shown}: the registry's upload location is not a URL"
            ))
        };
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(bad_location)?
            .to_string();
        drop(resp);
        // Relative to the registry, or absolute (then checked like any URL on the way).
        let mut url = reqwest::Url::parse(&self.base)
            .and_then(|b| b.join(&location))
            .map_err(|_| bad_location())?;
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let what = "uploading a blob";
        let resp = self
            .send(
                Method::PUT,
                url.as_str(),
                |r| {
                    Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, blob.size)
                        .body(body()?))
                },
                shown,
                what,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(refusal(resp, shown, what).await);
        }
        Ok(())
    }
}

/// The body of a blob file's upload, reporting "Pushing" progress for layer `id` as it is read.
fn file_body(
    path: PathBuf,
    id: String,
    total: u64,
    progress: UnboundedSender<Progress>,
) -> Result<reqwest::Body, PullError> {
    let file = std::fs::File::open(&path).ctx(|| format!("opening {}", path.display()))?;
    let file = tokio::fs::File::from_std(file);
    let state = (file, 0u64, 0u64);
    let stream = futures_util::stream::unfold(state, move |(mut file, sent, reported)| {
        let (id, progress) = (id.clone(), progress.clone());
        async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let n = match file.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => return Some((Err(e), (file, sent, reported))),
            };
            buf.truncate(n);
            let sent = sent + n as u64;
            let mut reported = reported;
            if sent - reported >= PROGRESS_STEP || sent == total {
                reported = sent;
                let _ = progress.send(Progress {
                    id: Some(id),
                    status: "Pushing".into(),
                    current: Some(sent),
                    total: Some(total),
                });
            }
            Some((Ok(bytes::Bytes::from(buf)), (file, sent, reported)))
        }
    });
    Ok(reqwest::Body::wrap_stream(stream.boxed()))
}

impl Puller {
    /// Opens a session with push access to `repository` (`registry/name`, no tag needed) with
    /// `creds`, connecting only where `reach` allows.
    pub async fn push_session(
        &self,
        repository: &str,
        creds: Option<&Credentials>,
        reach: &crate::fetch::Reach,
    ) -> Result<PushSession, PullError> {
        let reference = parse_reference(repository, None)?;
        let name = format!("{}/{}", reference.registry(), reference.repository());
        let session = Session::open(self, &reference, creds, reach, &name, Access::Push).await?;
        Ok(PushSession { session, name })
    }

    /// Pushes the stored image `image_id` as `tag` of the session's repository.
    pub async fn push(
        &self,
        s: &PushSession,
        tag: &str,
        image_id: &str,
        progress: &UnboundedSender<Progress>,
    ) -> Result<Pushed, PullError> {
        let send = |id: &str, status: &str| {
            let _ = progress.send(Progress {
                id: Some(id.to_string()),
                status: status.to_string(),
                current: None,
                total: None,
            });
        };
        let shown = format!("{}:{tag}", s.name);
        let store = self.store().clone();
        let id = image_id.to_string();
        let (info, config) = tokio::task::spawn_blocking(move || {
            store
                .get(&id)
                .and_then(|i| Ok((i.clone(), store.config_blob(&i.id)?)))
        })
        .await
        .map_err(|e| ImageError::BadArchive(format!("push task: {e}")))??;
        for d in &info.layers {
            send(&short(d), "Preparing");
        }
        let mut layers = Vec::new();
        for diff_id in &info.layers {
            let id = short(diff_id);
            if let Some(blob) = self.store().pushed_blob(diff_id) {
                if s.session.has_blob(&blob.digest, &shown).await? {
                    send(&id, "Layer already exists");
                    layers.push(blob);
                    continue;
                }
            }
            let store = self.store().clone();
            let d = diff_id.clone();
            let (tmp, blob) = tokio::task::spawn_blocking(move || store.gzip_layer(&d))
                .await
                .map_err(|e| ImageError::BadArchive(format!("compress task: {e}")))??;
            if s.session.has_blob(&blob.digest, &shown).await? {
                send(&id, "Layer already exists");
            } else {
                let path = tmp.path().to_path_buf();
                let body = || file_body(path.clone(), id.clone(), blob.size, progress.clone());
                s.session.upload(&blob, body, &shown).await?;
                send(&id, "Pushed");
            }
            drop(tmp);
            layers.push(blob);
        }
        let config_blob = Blob {
            digest: info.id.clone(),
            size: config.len() as u64,
        };
        if !s.session.has_blob(&config_blob.digest, &shown).await? {
            let body = || Ok(reqwest::Body::from(config.clone()));
            s.session.upload(&config_blob, body, &shown).await?;
        }
        let raw = manifest(Flavor::DockerGzip, &config_blob, &layers);
        let what = "storing the manifest";
        let url = s.session.repo_url(&format!("manifests/{tag}"));
        let resp = s
            .session
            .send(
                Method::PUT,
                &url,
                |r| {
                    Ok(r.header(CONTENT_TYPE, Flavor::DockerGzip.media_type())
                        .body(raw.clone()))
                },
                &shown,
                what,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(refusal(resp, &shown, what).await);
        }
        Ok(Pushed {
            tag: tag.to_string(),
            digest: crate::archive::sha256_digest(&raw),
            size: raw.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn gzip_blobs_are_reproducible_and_decompress_to_the_layer() {
        let layer = crate::test_utils::Layer::new()
            .file("bin/sh", &[7u8; 300_000], 0o755, 0, 0)
            .finish();
        let mut first = Vec::new();
        let a = gzip_blob(&layer[..], &mut first).unwrap();
        let mut second = Vec::new();
        let b = gzip_blob(&layer[..], &mut second).unwrap();
        assert_eq!(a, b, "the same layer gave two blobs");
        assert_eq!(first, second);
        assert_eq!(a.size, first.len() as u64);
        assert_eq!(a.digest, crate::test_utils::digest(&first));
        assert!(
            a.size < layer.len() as u64 / 10,
            "not compressed: {}",
            a.size
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&first[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, layer);
    }
}
