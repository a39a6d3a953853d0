//! Volume sources against hostile archives, a real HTTP server and a real git daemon, all on
//! 127.0.0.1 (refused addresses are refused before anything connects).

mod clones;
mod downloads;
mod uploads;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::test_utils::{gzip, Layer, TestDir};

/// The error and its causes, as hyperd shows them (server::error::error_chain).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn loopback_allowed() -> AddressPolicy {
    AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()])
}

fn timeout_scale() -> f64 {
    std::env::var("HYPER_TEST_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// A work dir with `tree/` (the target) and `outside/` (must stay empty), plus the archive.
struct Work {
    dir: TestDir,
}

impl Work {
    fn new(tag: &str) -> Work {
        let dir = TestDir::new(tag);
        fs::create_dir(dir.0.join("tree")).unwrap();
        fs::create_dir(dir.0.join("outside")).unwrap();
        Work { dir }
    }
    fn tree(&self) -> PathBuf {
        self.dir.0.join("tree")
    }
    fn outside(&self) -> PathBuf {
        self.dir.0.join("outside")
    }
    fn archive(&self, data: &[u8]) -> PathBuf {
        let p = self.dir.0.join("upload.tar");
        fs::write(&p, data).unwrap();
        p
    }
    fn unpack(&self, data: &[u8], limit: u64) -> Result<u64, SourceError> {
        unpack_upload(&self.archive(data), &self.tree(), limit)
    }
}

/// A directory's tar: root entry, nested dirs, owners and modes, set-id bit, links.
fn directory_tar() -> Vec<u8> {
    Layer::new()
        .dir("./", 0o750)
        .dir("./etc/", 0o700)
        .file("./etc/conf", b"key=value\n", 0o640, 1000, 1001)
        .file("./bin-tool", b"#!/bin/sh\n", 0o4755, 0, 0)
        .symlink("./passwd", "/etc/passwd")
        .symlink("./rel", "etc/conf")
        .hardlink("./etc/conf2", "./etc/conf")
        .finish()
}

#[test]
fn tree_size_counts_entries_and_bytes_once() {
    let w = Work::new("size");
    let t = w.tree();
    fs::create_dir(t.join("d")).unwrap();
    fs::write(t.join("d/a"), [0u8; 5000]).unwrap();
    fs::hard_link(t.join("d/a"), t.join("b")).unwrap();
    std::os::unix::fs::symlink("/nowhere/with/a/long/target", t.join("l")).unwrap();
    // d, d/a, b, l: four entries, 5000 bytes once.
    assert_eq!(tree_size(&t).unwrap(), 4 * ENTRY_OVERHEAD + 5000);
}

#[test]
fn urls_are_classified_or_refused() {
    // (URL, Ok(kind) or the error's text)
    let cases: &[(&str, Result<Kind, &str>)] = &[
        ("git://example.com/repo", Ok(Kind::Git)),
        ("https://example.com/org/repo.git", Ok(Kind::Git)),
        ("http://example.com/org/repo.git/", Ok(Kind::Git)),
        ("https://example.com/org/repo.git#v1.2", Ok(Kind::Git)),
        ("https://example.com/files/site.tar.gz", Ok(Kind::Tarball)),
        ("http://example.com/download?id=3", Ok(Kind::Tarball)),
        ("ftp://example.com/a.tar", Err("scheme ftp")),
        ("file:///etc/passwd", Err("scheme file")),
        ("ssh://git@example.com/repo.git", Err("scheme ssh")),
        ("https://example.com./a.tar", Err("trailing dot")),
        ("not a url", Err("invalid volume source URL")),
    ];
    for (i, (url, want)) in cases.iter().enumerate() {
        match (parse(url), want) {
            (Ok((_, kind)), Ok(k)) => assert_eq!(kind, *k, "test[{i}]"),
            (Err(e), Err(text)) => assert!(e.to_string().contains(text), "test[{i}]: {e}"),
            (got, _) => panic!("test[{i}]: {url}: {got:?}"),
        }
    }
}
