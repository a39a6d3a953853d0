//! Fuzz targets for tar unpacking, which runs as root on the host: image layers
//! ([`unpack_layers`], checked first by [`check_layers`]) and a tenant's volume upload
//! ([`unpack_upload`]). Proptest on stable, see `scripts/fuzz`.
//!
//! Archives are written header by header, so that they hold what the `tar` crate's builder
//! refuses to make: `..` and absolute names, symlinks out of the root and entries below them,
//! hard links to anything, whiteouts, GNU long names and pax paths, odd modes and owners,
//! sizes that lie, truncation and garbage. Everything happens in a fresh temporary directory:
//! `root/` is unpacked into, and everything beside it (`outside/`, the archives) is watched.
//! Absolute names and link targets only ever name that directory's `outside/` (`@OUT@` in the
//! generated text), so a bug that follows a link writes there, where it is seen, and never
//! into the host's own tree.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::layer::ingest;
use crate::source::unpack_upload;
use crate::unpack::{check_layers, unpack_layers};

const OUT: &str = "@OUT@";

/// One archive member before the temporary directory's path is known.
#[derive(Debug, Clone)]
struct Member {
    kind: u8,
    name: String,
    link: String,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    /// Extension that carries the name: none, a GNU long name, or a pax `path` record.
    long: u8,
    /// The header's size field says this many bytes more (or fewer) than the data.
    size_lie: i8,
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(vec!["a", "b", "lib", "etc", "outside", "secret", "."]),
        2 => prop::sample::select(vec![".wh.a", ".wh.lib", ".wh..wh..opq"]),
        1 => prop::sample::select(vec!["..", "", ".wh."]),
    ]
    .prop_map(String::from)
}

/// Entry names; the hostile ones (absolute, `..`) are rare, since one refuses a whole archive.
fn path_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            12 => prop::sample::select(vec!["", "./"]),
            1 => prop::sample::select(vec!["/", "@OUT@/", "../"]),
        ],
        prop::collection::vec(component(), 1..4),
        prop::sample::select(vec!["", "", "/"]),
    )
        .prop_map(|(lead, parts, tail)| format!("{lead}{}{tail}", parts.join("/")))
}

fn link_text() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => path_text(),
        1 => prop::sample::select(vec![
            "@OUT@",
            "@OUT@/secret",
            "../outside",
            "../../outside/secret",
            "../../../outside",
        ])
        .prop_map(String::from),
    ]
}

fn member() -> impl Strategy<Value = Member> {
    let kind = prop_oneof![
        12 => prop::sample::select(vec![b'0', b'0', b'5', b'5', b'2', b'2', b'1', b'6']),
        1 => prop::sample::select(vec![b'3', b'4', b'7', b'S', b'x', b'g', b'V']),
    ];
    (
        kind,
        path_text(),
        link_text(),
        prop::collection::vec(any::<u8>(), 0..40),
        prop_oneof![
            40 => prop::sample::select(vec![0o644u32, 0o755, 0, 0o4755, 0o7777]),
            1 => any::<u32>(),
        ],
        prop_oneof![30 => Just(0u64), 10 => Just(1000), 1 => Just(u64::from(u32::MAX) + 1)],
        prop_oneof![6 => Just(0u8), 1 => Just(1), 1 => Just(2)],
        prop_oneof![24 => Just(0i8), 1 => -3i8..3],
    )
        .prop_map(
            |(kind, name, link, data, mode, uid, long, size_lie)| Member {
                kind,
                name,
                link,
                data,
                mode,
                uid,
                long,
                size_lie,
            },
        )
}

/// A whole archive: members, then maybe an end marker, maybe cut short or followed by garbage.
fn archive() -> impl Strategy<Value = (Vec<Member>, u8)> {
    (
        prop::collection::vec(member(), 0..8),
        prop_oneof![8 => 0u8..2, 1 => 2u8..4],
    )
}

fn pad(v: &mut Vec<u8>) {
    v.resize(v.len().div_ceil(512) * 512, 0);
}

fn header(kind: u8, name: &[u8], link: &[u8], size: u64, mode: u32, uid: u64) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    let old = h.as_old_mut();
    let n = name.len().min(100);
    old.name = [0; 100];
    old.name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    old.linkname = [0; 100];
    old.linkname[..l].copy_from_slice(&link[..l]);
    h.set_cksum();
    *h.as_bytes()
}

/// The archive's bytes, `@OUT@` replaced by `out`.
fn tar_bytes(members: &[Member], ending: u8, out: &Path) -> Vec<u8> {
    let out = out.to_str().unwrap();
    let mut v = Vec::new();
    for m in members {
        let name = m.name.replace(OUT, out).into_bytes();
        let link = m.link.replace(OUT, out).into_bytes();
        match m.long {
            1 => {
                let mut data = name.clone();
                data.push(0);
                v.extend(header(b'L', b"././@LongLink", b"", data.len() as u64, 0, 0));
                v.extend(data);
                pad(&mut v);
            }
            2 => {
                let record =
                    |len: usize| format!("{len} path={}\n", String::from_utf8_lossy(&name));
                let mut len = record(0).len();
                while record(len).len() != len {
                    len = record(len).len();
                }
                let data = record(len).into_bytes();
                v.extend(header(b'x', b"PaxHeader", b"", data.len() as u64, 0, 0));
                v.extend(data);
                pad(&mut v);
            }
            _ => {}
        }
        let size = (m.data.len() as i64 + i64::from(m.size_lie)).max(0) as u64;
        v.extend(header(m.kind, &name, &link, size, m.mode, m.uid));
        v.extend(&m.data);
        pad(&mut v);
    }
    match ending {
        0 => v.extend([0u8; 1024]),
        1 => {}
        2 => v.truncate(v.len().saturating_sub(100)),
        _ => v.extend([0x5a; 700]),
    }
    v
}

/// What a tree holds, read without following symlinks: path -> (type, mode, owner, content
/// or link target).
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {:?}", fs::read_link(&p).unwrap())
            } else if m.is_dir() {
                todo.push(p.clone());
                "dir".to_string()
            } else if m.is_file() {
                format!("file {:?}", fs::read(&p).unwrap())
            } else {
                "other".to_string()
            };
            let key = p.strip_prefix(dir).unwrap().to_path_buf();
            out.insert(
                key,
                format!(
                    "{what} {:o} {}:{} {}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.nlink()
                ),
            );
        }
    }
    out
}

/// A temporary directory with `root/` (empty) and `outside/` (a file and a directory), and
/// the snapshot of everything but `root/`.
fn scene() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = tmp.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir_all(out.join("a")).unwrap();
    fs::write(out.join("secret"), b"host data").unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    (tmp, root, out)
}

/// Makes everything under `dir` removable again (archives may leave modes like 0).
fn unlock(dir: &Path) {
    for (p, _) in snapshot(dir, Path::new("")) {
        let p = dir.join(p);
        if !fs::symlink_metadata(&p).unwrap().file_type().is_symlink() {
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o700));
        }
    }
}

proptest! {
    /// Image layers: nothing outside the root changes, whatever the layers hold; and the
    /// checks run when an image is loaded agree with the unpacker (layers they pass unpack).
    #[test]
    fn fuzz_unpack_layers(layers in prop::collection::vec(archive(), 1..4)) {
        let (tmp, root, out) = scene();
        let mut blobs = Vec::new();
        for (i, (members, ending)) in layers.iter().enumerate() {
            let blob = tmp.path().join(format!("blob{i}"));
            fs::write(&blob, tar_bytes(members, *ending, &out)).unwrap();
            blobs.push((blob, tmp.path().join(format!("layer{i}.tar")), format!("layer {i}")));
        }
        // As an image arrives: each layer is ingested (read whole, every entry checked), then
        // the layers are checked together; only then is it unpacked, at its first start.
        let ingested: Result<Vec<_>, _> = blobs
            .iter()
            .map(|(blob, tar, label)| ingest(blob, tar, label).map(|_| (tar.clone(), label.clone())))
            .collect();
        let Ok(paths) = ingested else {
            return Ok(());
        };
        let before = snapshot(tmp.path(), &root);
        let checked = check_layers(&paths);
        let unpacked = unpack_layers(&paths, &root);
        prop_assert_eq!(snapshot(tmp.path(), &root), before, "something outside the root changed");
        if let Err(e) = &unpacked {
            prop_assert!(checked.is_err(), "check_layers passed layers that fail to unpack: {e}");
        }
        unlock(&root);
    }

    /// A tenant's upload into a volume tree: nothing outside the tree changes, and a tree that
    /// was accepted fits the volume.
    #[test]
    fn fuzz_unpack_upload((members, ending) in archive(), limit in prop_oneof![Just(1u64 << 30), 0u64..40_000]) {
        let (tmp, root, out) = scene();
        let tar = tmp.path().join("upload.tar");
        fs::write(&tar, tar_bytes(&members, ending, &out)).unwrap();
        let before = snapshot(tmp.path(), &root);
        let got = unpack_upload(&tar, &root, limit);
        prop_assert_eq!(snapshot(tmp.path(), &root), before, "something outside the tree changed");
        if let Ok(size) = got {
            prop_assert!(size <= limit, "a tree of {size} bytes accepted for a limit of {limit}");
        }
        unlock(&root);
    }
}
