//! `unpack_upload` with good and hostile archives.

use super::*;

#[test]
fn upload_unpacks_a_directory_tar() {
    let w = Work::new("up-dir");
    let size = w.unpack(&directory_tar(), 1 << 20).unwrap();
    let t = w.tree();
    assert_eq!(size, tree_size(&t).unwrap());
    assert_eq!(
        fs::metadata(&t).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    let conf = fs::metadata(t.join("etc/conf")).unwrap();
    assert_eq!(fs::read(t.join("etc/conf")).unwrap(), b"key=value\n");
    assert_eq!(
        (conf.uid(), conf.gid(), conf.mode() & 0o7777),
        (1000, 1001, 0o640)
    );
    assert_eq!(conf.nlink(), 2);
    assert_eq!(fs::metadata(t.join("etc/conf2")).unwrap().ino(), conf.ino());
    assert_eq!(
        fs::metadata(t.join("bin-tool")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::read_link(t.join("passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(fs::read_link(t.join("rel")).unwrap(), Path::new("etc/conf"));
    assert_eq!(conf.mtime(), 1_700_000_000);
    // Six entries below the root (etc, conf, conf2, bin-tool, passwd, rel); conf's bytes once.
    assert_eq!(size, 6 * ENTRY_OVERHEAD + 10 + 10);
}

#[test]
fn upload_of_a_single_file_lands_under_its_name() {
    let w = Work::new("up-file");
    let tar = Layer::new()
        .file("notes.txt", b"hello", 0o644, 0, 0)
        .finish();
    w.unpack(&gzip(&tar), 1 << 20).unwrap();
    assert_eq!(fs::read(w.tree().join("notes.txt")).unwrap(), b"hello");
}

#[test]
fn upload_reads_long_names_and_pax_records() {
    let w = Work::new("up-pax");
    let long = format!("{}/file", "d".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(4);
    // A GNU long name (the name is over 100 bytes).
    b.append_data(&mut h.clone(), &long, &b"long"[..]).unwrap();
    // A pax header giving the path and an owner too large for the octal field.
    b.append_pax_extensions([("path", &b"pax/named"[..]), ("uid", b"3000000")])
        .unwrap();
    b.append_data(&mut h, "short", &b"pax!"[..]).unwrap();
    w.unpack(&b.into_inner().unwrap(), 1 << 20).unwrap();
    assert_eq!(fs::read(w.tree().join(&long)).unwrap(), b"long");
    let pax = w.tree().join("pax/named");
    assert_eq!(fs::read(&pax).unwrap(), b"pax!");
    assert_eq!(fs::metadata(&pax).unwrap().uid(), 3_000_000);
    assert!(!w.tree().join("short").exists());
}

/// Found by `fuzz_unpack::fuzz_unpack_upload`: the directories an entry's path makes on its
/// way were not charged, so one entry `d/d/.../f` made a tree many times the volume's size.
#[test]
fn upload_charges_the_directories_a_path_makes() {
    let w = Work::new("up-deep");
    let deep = format!("{}f", "d/".repeat(45));
    let tar = Layer::new().file(&deep, b"", 0o644, 0, 0).finish();
    // The header, the file and one of its 45 directories fit; the other 44 do not.
    let err = w.unpack(&tar, 512 + 2 * ENTRY_OVERHEAD).unwrap_err();
    assert!(matches!(err, SourceError::TooLarge { .. }), "{err}");
    let w = Work::new("up-deep-fits");
    let size = w.unpack(&tar, 512 + 46 * ENTRY_OVERHEAD).unwrap();
    assert_eq!(size, 46 * ENTRY_OVERHEAD);
}

/// A tar whose only entry is a pax header of `n` bytes, then a file.
fn huge_pax(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let value = vec![b'x'; n];
    b.append_pax_extensions([("comment", value.as_slice())])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    b.append_data(&mut h, "f", &b""[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn upload_refuses_hostile_or_broken_tars() {
    let outside = |w: &Work| w.outside().display().to_string();
    // (archive, volume size, expected error in the chain)
    type Case = (Box<dyn Fn(&Work) -> Vec<u8>>, u64, &'static str);
    let cases: Vec<Case> = vec![
        (
            Box::new(|_| Layer::new().file("../escape", b"x", 0o644, 0, 0).finish()),
            1 << 20,
            "archive entry ../escape escapes the volume's root",
        ),
        (
            Box::new(|_| Layer::new().file("/etc/owned", b"x", 0o644, 0, 0).finish()),
            1 << 20,
            "archive entry /etc/owned escapes the volume's root",
        ),
        (
            Box::new(|_| Layer::new().file("a/../../x", b"x", 0o644, 0, 0).finish()),
            1 << 20,
            "escapes the volume's root",
        ),
        (
            Box::new(move |w| {
                Layer::new()
                    .symlink("evil", &outside(w))
                    .file("evil/owned", b"x", 0o644, 0, 0)
                    .finish()
            }),
            1 << 20,
            "archive entry evil/owned: a parent is a symlink or a file",
        ),
        (
            Box::new(move |w| {
                Layer::new()
                    .symlink("evil", &outside(w))
                    .dir("evil/sub/", 0o755)
                    .finish()
            }),
            1 << 20,
            "archive entry evil/sub: a parent is a symlink",
        ),
        (
            Box::new(|_| {
                Layer::new()
                    .file("f", b"x", 0o644, 0, 0)
                    .file("f/x", b"x", 0o644, 0, 0)
                    .finish()
            }),
            1 << 20,
            "archive entry f/x: a parent is a symlink or a file",
        ),
        (
            Box::new(move |w| {
                fs::write(w.outside().join("secret"), b"s").unwrap();
                Layer::new()
                    .symlink("evil", &outside(w))
                    .hardlink("stolen", "evil/secret")
                    .finish()
            }),
            1 << 20,
            "hard link stolen -> evil/secret: target missing",
        ),
        (
            Box::new(|_| Layer::new().hardlink("stolen", "../x").finish()),
            1 << 20,
            "archive entry ../x escapes the volume's root",
        ),
        (
            Box::new(|_| Layer::new().chardev("dev/sda").finish()),
            1 << 20,
            "archive entry dev/sda is a character device; volume sources hold files",
        ),
        (
            Box::new(|_| Layer::new().fifo("pipe").finish()),
            1 << 20,
            "archive entry pipe is a fifo",
        ),
        (
            Box::new(|_| Layer::new().file("big", &[7; 10_000], 0o644, 0, 0).finish()),
            8192,
            "the unpacked archive (file bytes plus 4 KiB per entry) needs at least 14608 bytes, more than the volume's 8192",
        ),
        (
            Box::new(|_| {
                let mut l = Layer::new();
                for i in 0..20 {
                    l.file(&format!("empty{i}"), b"", 0o644, 0, 0);
                }
                l.finish()
            }),
            10 * ENTRY_OVERHEAD,
            "more than the volume's 40960",
        ),
        (
            Box::new(|_| huge_pax(2 << 20)),
            1 << 30,
            "invalid tar archive: a long name or pax header of",
        ),
        (
            Box::new(|_| b"<html><body>SECRET-BANNER</body></html>".repeat(20)),
            1 << 20,
            "the source is not a tar archive",
        ),
        (
            Box::new(|_| Vec::new()),
            1 << 20,
            "the source is not a tar archive",
        ),
        (
            Box::new(|_| gzip(b"not a tar at all, but gzipped")),
            1 << 20,
            "the source is not a tar archive",
        ),
    ];
    for (i, (make, limit, want)) in cases.iter().enumerate() {
        let w = Work::new("up-bad");
        let err = w.unpack(&make(&w), *limit).unwrap_err();
        let msg = chain(&err);
        assert!(msg.contains(want), "test[{i}]: {msg}");
        assert!(!msg.contains("SECRET"), "test[{i}]: {msg}");
        let left: Vec<_> = fs::read_dir(w.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "secret")
            .collect();
        assert!(left.is_empty(), "test[{i}]: wrote outside: {left:?}");
        assert!(!w.dir.0.join("escape").exists(), "test[{i}]");
    }
}
