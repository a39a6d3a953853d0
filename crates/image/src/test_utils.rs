//! Builders for small layers and archives in tests.

use std::io::Write;

use serde_json::json;
use sha2::{Digest, Sha256};

pub(crate) fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A layer tar built entry by entry.
pub(crate) struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    pub fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }

    /// Writes the name straight into the header, so tests can make names the `tar` crate's
    /// own checks would refuse (`..`, absolute).
    fn raw(
        &mut self,
        mut h: tar::Header,
        name: &str,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = Self::header(tar::EntryType::Directory, mode, 0, 0, 0);
        self.raw(h, name, None, b"")
    }

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Self {
        let h = Self::header(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.raw(h, name, None, data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.raw(h, name, Some(target), b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Link, 0o644, 0, 0, 0);
        self.raw(h, name, Some(target), b"")
    }

    pub fn chardev(&mut self, name: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Char, 0o666, 0, 0, 0);
        self.raw(h, name, None, b"")
    }

    pub fn fifo(&mut self, name: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Fifo, 0o644, 0, 0, 0);
        self.raw(h, name, None, b"")
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// An image config for layers whose uncompressed tars are `layers`.
pub(crate) fn config(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

/// An old-style `docker save` archive (`<id>.json`, `<n>/layer.tar`; manifest last, as docker
/// writes it). `blobs` are the layer blobs as stored (maybe gzipped), `layers` uncompressed.
pub(crate) fn docker_save(layers: &[Vec<u8>], blobs: &[Vec<u8>], tag: &str) -> Vec<u8> {
    let cfg = config(layers);
    let id = digest(&cfg);
    let hex = id.strip_prefix("sha256:").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        let name = format!("l{i}/layer.tar");
        add(&mut b, &name, blob);
        names.push(name);
    }
    add(&mut b, &format!("{hex}.json"), &cfg);
    let manifest = json!([{"Config": format!("{hex}.json"), "RepoTags": [tag], "Layers": names}]);
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.into_inner().unwrap()
}

/// An OCI image layout archive (as `docker save` >= 25 also writes, minus manifest.json).
pub(crate) fn oci_layout(layers: &[Vec<u8>], blobs: &[Vec<u8>], name: &str) -> Vec<u8> {
    let cfg = config(layers);
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let blob = |b: &mut tar::Builder<Vec<u8>>, data: &[u8]| {
        let d = digest(data);
        add(
            b,
            &format!("blobs/sha256/{}", d.strip_prefix("sha256:").unwrap()),
            data,
        );
        d
    };
    let cfg_d = blob(&mut b, &cfg);
    let mut descs = Vec::new();
    for l in blobs {
        let gz = l.starts_with(&[0x1f, 0x8b]);
        let d = blob(&mut b, l);
        descs.push(json!({
            "mediaType": if gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" },
            "digest": d, "size": l.len()}));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    let m_d = blob(&mut b, &manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_d, "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}}]});
    add(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    b.into_inner().unwrap()
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TestDir(pub std::path::PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let p =
            std::env::temp_dir().join(format!("image-test-{tag}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&p).unwrap();
        TestDir(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tiny HTTP/1.1 server on `ip` (any free port) for tests of what the node connects to:
/// each connection gets one answer, made by `answer` from the request's path (a whole
/// response, status line to body), and is closed. Counts connections; runs until the test
/// process ends.
pub(crate) struct FakeServer {
    pub addr: std::net::SocketAddr,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeServer {
    pub fn start(ip: &str, answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> FakeServer {
        use std::io::{BufRead, BufReader};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut header = String::new();
                while reader.read_line(&mut header).unwrap_or(0) > 2 {
                    header.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let _ = conn.write_all(&answer(&path));
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        });
        FakeServer { addr, hits }
    }

    /// Connections accepted so far.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `http://ADDR` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A whole HTTP/1.1 response that closes the connection.
pub(crate) fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}
