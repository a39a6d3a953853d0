use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::test_utils::*;

/// Two layers: the second deletes a file (whiteout), makes /opq opaque, adds files.
fn two_layers() -> Vec<Vec<u8>> {
    let l1 = Layer::new()
        .dir("bin/", 0o755)
        .file("bin/tool", b"#!/bin/sh\necho hi\n", 0o4755, 0, 0)
        .hardlink("bin/tool2", "bin/tool")
        .symlink("bin/sh", "/bin/busybox")
        .symlink("lib", "usr/lib")
        .dir("etc/", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644, 0, 0)
        .file("etc/gone", b"bye", 0o644, 0, 0)
        .dir("opq/", 0o700)
        .file("opq/old", b"old", 0o600, 1000, 1000)
        .dir("opq/olddir/", 0o755)
        .file("opq/olddir/x", b"x", 0o600, 0, 0)
        .dir("tmp/", 0o1777)
        .chardev("dev-null")
        .finish();
    let l2 = Layer::new()
        .file("etc/.wh.gone", b"", 0o644, 0, 0)
        .dir("opq/", 0o750)
        .file("opq/.wh..wh..opq", b"", 0o644, 0, 0)
        .file("opq/new", b"new", 0o640, 1000, 100)
        .dir("home/", 0o755)
        .file("home/u", b"u", 0o644, 1234, 5678)
        .finish();
    vec![l1, l2]
}

fn check_tree(root: &Path) {
    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(
        fs::read(root.join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(meta("bin/tool").permissions().mode() & 0o7777, 0o4755);
    assert_eq!(
        meta("bin/tool").ino(),
        meta("bin/tool2").ino(),
        "hard link kept"
    );
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(root.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
    assert!(!root.join("etc/gone").exists(), "whiteout applied");
    assert!(
        !root.join("etc/.wh.gone").exists(),
        "whiteout file not created"
    );
    assert!(root.join("etc/passwd").exists());
    assert!(
        !root.join("opq/old").exists(),
        "opaque dir hides lower files"
    );
    assert!(
        !root.join("opq/olddir").exists(),
        "opaque dir hides lower dirs"
    );
    assert!(!root.join("opq/.wh..wh..opq").exists());
    assert_eq!(fs::read(root.join("opq/new")).unwrap(), b"new");
    assert_eq!(meta("opq").permissions().mode() & 0o7777, 0o750);
    assert_eq!((meta("opq/new").uid(), meta("opq/new").gid()), (1000, 100));
    assert_eq!((meta("home/u").uid(), meta("home/u").gid()), (1234, 5678));
    assert_eq!(meta("tmp").permissions().mode() & 0o7777, 0o1777);
    assert_eq!(meta("etc/passwd").mtime(), 1_700_000_000);
    assert!(
        fs::symlink_metadata(root.join("dev-null")).is_err(),
        "device node skipped"
    );
}

fn unpack_image(store: &ImageStore, info: &ImageInfo, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let layers: Vec<_> = info
        .layers
        .iter()
        .map(|l| (store.layer_path(l), l.clone()))
        .collect();
    unpack::unpack_layers(&layers, dest).unwrap();
}

#[test]
fn docker_save_gzip_round_trip() {
    let dir = TestDir::new("docker");
    let store = ImageStore::open(dir.0.join("store")).unwrap();
    let layers = two_layers();
    let blobs = vec![gzip(&layers[0]), layers[1].clone()];
    let archive = docker_save(&layers, &blobs, "test:1");
    let images = store.load_archive(archive.as_slice()).unwrap();
    assert_eq!(images.len(), 1);
    let info = &images[0];
    assert_eq!(info.id, digest(&config(&layers)));
    assert_eq!(info.repo_tags, vec!["test:1"]);
    assert_eq!(info.layers, vec![digest(&layers[0]), digest(&layers[1])]);
    assert_eq!(info.config["config"]["Cmd"][0], "sh");
    assert_eq!(info.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    assert_eq!(info.size, 18 + 26 + 3 + 3 + 1 + 3 + 1);
    assert_eq!(store.get(&info.id).unwrap(), *info);
    assert_eq!(
        store.get(&info.id[7..19]).unwrap().id,
        info.id,
        "prefix lookup"
    );
    assert_eq!(store.list(), vec![info.clone()]);

    unpack_image(&store, info, &dir.0.join("tree"));
    check_tree(&dir.0.join("tree"));
    assert!(
        fs::read_dir(dir.0.join("store/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp cleaned"
    );
}

#[test]
fn oci_layout_and_shared_layers() {
    let dir = TestDir::new("oci");
    let store = ImageStore::open(dir.0.join("store")).unwrap();
    let layers = two_layers();
    let blobs = vec![layers[0].clone(), gzip(&layers[1])];
    let info = store
        .load_archive(oci_layout(&layers, &blobs, "docker.io/library/t:2").as_slice())
        .unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].repo_tags, vec!["docker.io/library/t:2"]);
    unpack_image(&store, &info[0], &dir.0.join("tree"));
    check_tree(&dir.0.join("tree"));

    // A second image sharing the first layer stores it once; removing one keeps the shared layer.
    let other = vec![
        layers[0].clone(),
        Layer::new().file("x", b"x", 0o644, 0, 0).finish(),
    ];
    let info2 = store
        .load_archive(docker_save(&other, &other, "o:1").as_slice())
        .unwrap();
    assert_eq!(fs::read_dir(dir.0.join("store/layers")).unwrap().count(), 3);
    store.remove(&info[0].id).unwrap();
    assert_eq!(fs::read_dir(dir.0.join("store/layers")).unwrap().count(), 2);
    assert!(matches!(
        store.get(&info[0].id),
        Err(ImageError::NotFound(_))
    ));
    store.remove(&info2[0].id).unwrap();
    assert_eq!(fs::read_dir(dir.0.join("store/layers")).unwrap().count(), 0);
    assert!(store.list().is_empty());
}

#[test]
fn refuses_bad_archives() {
    let dir = TestDir::new("bad");
    let store = ImageStore::open(dir.0.join("store")).unwrap();
    let layers = two_layers();

    // A layer changed after its digest was taken.
    let mut tampered = layers.clone();
    tampered[1] = Layer::new().file("home/u", b"evil", 0o644, 0, 0).finish();
    let mut archive = docker_save(&layers, &tampered, "t:1");
    let err = store.load_archive(archive.as_slice()).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("layer {} digest mismatch", digest(&layers[1]))),
        "{err}"
    );

    // An OCI blob whose bytes do not match its name.
    archive = oci_layout(&layers, &layers, "t:1");
    let needle = b"etc/passwd";
    let pos = archive
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    archive[pos] = b'E';
    let err = store.load_archive(archive.as_slice()).unwrap_err();
    assert!(
        matches!(err, ImageError::DigestMismatch { what: "layer", .. }),
        "{err}"
    );

    // Not an image archive.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(2);
    h.set_mode(0o644);
    b.append_data(&mut h, "hello.txt", &b"hi"[..]).unwrap();
    let err = store
        .load_archive(b.into_inner().unwrap().as_slice())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "archive has no manifest.json or index.json"
    );

    // Escaping entries, refused at load.
    for (i, evil) in [
        Layer::new()
            .file("../etc/passwd", b"x", 0o644, 0, 0)
            .finish(),
        Layer::new().file("/etc/passwd", b"x", 0o644, 0, 0).finish(),
        Layer::new().file("a/../../x", b"x", 0o644, 0, 0).finish(),
    ]
    .into_iter()
    .enumerate()
    {
        let evil = vec![evil];
        let err = store
            .load_archive(docker_save(&evil, &evil, "e:1").as_slice())
            .unwrap_err();
        assert!(matches!(err, ImageError::PathEscape(_)), "test[{i}]: {err}");
    }
    assert_eq!(
        ImageError::PathEscape("../etc".into()).to_string(),
        "path escapes the root: ../etc"
    );
    assert!(store.list().is_empty());
    assert_eq!(fs::read_dir(dir.0.join("store/layers")).unwrap().count(), 0);
    assert!(
        fs::read_dir(dir.0.join("store/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp cleaned"
    );
}

#[test]
fn unpack_never_follows_symlinks() {
    let dir = TestDir::new("symlink");
    let outside = dir.0.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let root = dir.0.join("root");
    fs::create_dir_all(&root).unwrap();
    let l1 = Layer::new()
        .symlink("esc", outside.to_str().unwrap())
        .symlink("rel", "../outside")
        .file("target", b"t", 0o644, 0, 0)
        .finish();
    // Writes through the symlinks: each symlink is replaced by a directory instead.
    let l2 = Layer::new()
        .file("esc/pwned", b"x", 0o644, 0, 0)
        .file("rel/pwned", b"x", 0o644, 0, 0)
        .hardlink("hl", "target")
        .finish();
    let (p1, p2) = (dir.0.join("l1.tar"), dir.0.join("l2.tar"));
    fs::write(&p1, &l1).unwrap();
    fs::write(&p2, &l2).unwrap();
    unpack::unpack_layers(&[(p1, "l1".into()), (p2.clone(), "l2".into())], &root).unwrap();
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing written outside"
    );
    assert!(root.join("esc/pwned").exists() && root.join("rel/pwned").exists());

    // A hard link through a symlinked directory or outside the root is refused.
    let l3 = Layer::new()
        .symlink("d", outside.to_str().unwrap())
        .finish();
    let l4 = Layer::new().hardlink("h", "d/x").finish();
    let l5 = Layer::new().hardlink("h", "../outside/x").finish();
    fs::write(outside.join("x"), b"secret").unwrap();
    let (p3, p4, p5) = (
        dir.0.join("l3.tar"),
        dir.0.join("l4.tar"),
        dir.0.join("l5.tar"),
    );
    fs::write(&p3, &l3).unwrap();
    fs::write(&p4, &l4).unwrap();
    fs::write(&p5, &l5).unwrap();
    let err = unpack::unpack_layers(&[(p3, "l3".into()), (p4, "l4".into())], &root).unwrap_err();
    assert!(matches!(err, ImageError::BadLayer { .. }), "{err}");
    let err = unpack::unpack_layers(&[(p5, "l5".into())], &root).unwrap_err();
    assert!(matches!(err, ImageError::PathEscape(_)), "{err}");
    assert!(!root.join("h").exists());
}

/// Layer stacks with hard links, and whether they unpack: a load refuses exactly those that
/// would not (and says why), and stores nothing of them.
#[test]
fn hard_links_that_would_not_unpack_are_refused_at_load() {
    let dir = TestDir::new("hardlinks");
    let store = ImageStore::open(dir.0.join("store")).unwrap();
    let file = |name: &str| Layer::new().file(name, b"x", 0o644, 0, 0).finish();
    let cases: Vec<(Vec<Vec<u8>>, Option<&str>)> = vec![
        // Within a layer, and to a lower layer's file: fine.
        (
            vec![Layer::new()
                .file("a", b"x", 0o644, 0, 0)
                .hardlink("b", "a")
                .finish()],
            None,
        ),
        (
            vec![file("a"), Layer::new().hardlink("b", "a").finish()],
            None,
        ),
        // Out of the root.
        (
            vec![Layer::new().hardlink("h", "../../../etc/passwd").finish()],
            Some("path escapes the root: ../../../etc/passwd (the target of hard link h)"),
        ),
        (
            vec![Layer::new().hardlink("h", "/etc/passwd").finish()],
            Some("path escapes the root: /etc/passwd (the target of hard link h)"),
        ),
        // To nothing, a directory, through a symlink, to what a whiteout removed.
        (
            vec![Layer::new().hardlink("h", "nosuch").finish()],
            Some("hard link h -> nosuch: target missing"),
        ),
        (
            vec![Layer::new().dir("d/", 0o755).hardlink("h", "d").finish()],
            Some("hard link h -> d: target missing"),
        ),
        (
            vec![
                Layer::new().symlink("d", "/etc").finish(),
                Layer::new().hardlink("h", "d/passwd").finish(),
            ],
            Some("hard link h -> d/passwd: target missing"),
        ),
        (
            vec![
                file("a"),
                Layer::new()
                    .file(".wh.a", b"", 0o644, 0, 0)
                    .hardlink("b", "a")
                    .finish(),
            ],
            Some("hard link b -> a: target missing"),
        ),
        (
            vec![
                file("d/a"),
                Layer::new()
                    .file("d/.wh..wh..opq", b"", 0o644, 0, 0)
                    .hardlink("b", "d/a")
                    .finish(),
            ],
            Some("hard link b -> d/a: target missing"),
        ),
    ];
    for (i, (layers, refused)) in cases.iter().enumerate() {
        // What the unpacker does with the same layers.
        let root = dir.0.join(format!("root{i}"));
        fs::create_dir_all(&root).unwrap();
        let files: Vec<(std::path::PathBuf, String)> = layers
            .iter()
            .enumerate()
            .map(|(n, l)| {
                let p = dir.0.join(format!("case{i}-{n}.tar"));
                fs::write(&p, l).unwrap();
                (p, format!("l{n}"))
            })
            .collect();
        let unpacked = unpack::unpack_layers(&files, &root);
        assert_eq!(
            unpacked.is_ok(),
            refused.is_none(),
            "test[{i}]: {unpacked:?}"
        );

        let loaded = store.load_archive(docker_save(layers, layers, "h:1").as_slice());
        match (refused, loaded) {
            (None, Ok(images)) => store.remove(&images[0].id).unwrap(),
            (Some(why), Err(e)) => assert!(e.to_string().contains(why), "test[{i}]: {e}"),
            (want, got) => panic!("test[{i}]: wanted {want:?}, got {got:?}"),
        }
    }
    assert!(store.list().is_empty());
    assert_eq!(fs::read_dir(dir.0.join("store/layers")).unwrap().count(), 0);
    assert!(
        fs::read_dir(dir.0.join("store/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp cleaned"
    );
}

fn debugfs(disk: &Path, cmd: &str) -> String {
    let out = std::process::Command::new("debugfs")
        .args(["-R", cmd])
        .arg(disk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ensure_disk_builds_ext4_once() {
    if std::process::Command::new("mkfs.ext4")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipping: mkfs.ext4 not installed");
        return;
    }
    let dir = TestDir::new("disk");
    let store = ImageStore::open(dir.0.join("store")).unwrap();
    let layers = two_layers();
    let info = store
        .load_archive(docker_save(&layers, &layers, "d:1").as_slice())
        .unwrap();
    let disk = store.ensure_disk(&info[0].id).unwrap();
    assert_eq!(
        disk,
        dir.0
            .join("store/disks")
            .join(format!("{}.ext4", &info[0].id[7..]))
    );
    let ls = debugfs(&disk, "ls -l /");
    for name in ["bin", "etc", "opq", "tmp", "home", "lib", "lost+found"] {
        assert!(ls.contains(name), "{name} missing in:\n{ls}");
    }
    assert!(!ls.contains("dev-null"));
    let stat = debugfs(&disk, "stat /home/u");
    assert!(
        stat.contains("User:  1234") && stat.contains("Group:  5678"),
        "{stat}"
    );
    let stat = debugfs(&disk, "stat /bin/tool");
    assert!(
        stat.contains("Mode:  04755") && stat.contains("Links: 2"),
        "{stat}"
    );
    assert!(debugfs(&disk, "cat /etc/passwd").starts_with("root:x:0:0"));
    let label = std::process::Command::new("e2label")
        .arg(&disk)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "hyper-root");
    // The root disk's size, sparse: only what mkfs wrote takes space.
    let md = fs::metadata(&disk).unwrap();
    assert_eq!(md.len(), vm::ROOT_DISK_BYTES);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&md) * 512 < 100 << 20,
        "{} bytes allocated",
        std::os::unix::fs::MetadataExt::blocks(&md) * 512
    );

    // Cached: the same file, not rebuilt.
    let mtime = fs::metadata(&disk).unwrap().modified().unwrap();
    assert_eq!(store.ensure_disk(&info[0].id).unwrap(), disk);
    assert_eq!(fs::metadata(&disk).unwrap().modified().unwrap(), mtime);
    assert!(
        fs::read_dir(dir.0.join("store/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp cleaned"
    );
    store.remove(&info[0].id).unwrap();
    assert!(!disk.exists());
}

#[test]
fn busybox_script_archive_loads() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-busybox-image");
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: /bin/busybox not installed (apt-get install busybox-static)");
        return;
    }
    let dir = TestDir::new("busybox");
    let out = dir.0.join("bb.tar");
    let st = std::process::Command::new(&script)
        .arg(&out)
        .arg("bb:test")
        .status()
        .unwrap();
    assert!(st.success());
    let store = ImageStore::open(dir.0.join("store")).unwrap();
    let info = store.load_archive(fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(info.len(), 1);
    let info = &info[0];
    assert_eq!(info.repo_tags, vec!["bb:test"]);
    assert_eq!(info.config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(info.config["architecture"], "amd64");
    assert_eq!(info.config["os"], "linux");
    let tree = dir.0.join("tree");
    unpack_image(&store, info, &tree);
    assert_eq!(
        fs::read_link(tree.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert!(fs::read_to_string(tree.join("etc/passwd"))
        .unwrap()
        .contains("nobody:x:65534"));
    assert_eq!(
        fs::metadata(tree.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(tree.join("root"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    let busybox = tree.join("bin/busybox");
    let ls = std::process::Command::new(&busybox)
        .arg("true")
        .status()
        .unwrap();
    assert!(ls.success());
}

#[test]
fn zstd_layer() {
    let dir = TestDir::new("zstd");
    let layers = two_layers();
    let plain = dir.0.join("l.tar");
    fs::write(&plain, &layers[1]).unwrap();
    let st = std::process::Command::new("zstd")
        .args(["-q", "-f"])
        .arg(&plain)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        eprintln!("skipping: zstd CLI not available");
        return;
    }
    let blobs = vec![
        layers[0].clone(),
        fs::read(dir.0.join("l.tar.zst")).unwrap(),
    ];
    let store = ImageStore::open(dir.0.join("store")).unwrap();
    let info = store
        .load_archive(oci_layout(&layers, &blobs, "z:1").as_slice())
        .unwrap();
    assert_eq!(info[0].layers[1], digest(&layers[1]));
    unpack_image(&store, &info[0], &dir.0.join("tree"));
    check_tree(&dir.0.join("tree"));
}
