//! Docker's `changes`, computed from two manifests: the image's (made by hyperd from the
//! layers) and the container's (listed by the guest, streamed through [`Differ::see`]).
//! Docker's rules: a directory is compared by type, permissions and owners only, a file by
//! size, modification time and link target too; every directory above a change is itself
//! changed; of a deleted tree only its top is reported.

use std::collections::{BTreeMap, HashMap};

use agent_proto::FileMeta;

/// 0 modified, 1 added, 2 deleted.
pub type Kind = u8;
pub const MODIFIED: Kind = 0;
pub const ADDED: Kind = 1;
pub const DELETED: Kind = 2;

/// Paths the VM's start writes or makes (Docker's init layer), and what mkfs adds: never
/// reported.
fn ignored(path: &str) -> bool {
    const UNDER: [&str; 4] = ["/proc", "/sys", "/dev", "/lost+found"];
    const FILES: [&str; 4] = [
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/etc/machine-id",
    ];
    UNDER
        .iter()
        .any(|d| path == *d || path.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
        || FILES.contains(&path)
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

pub struct Differ {
    /// The image's entries not seen in the container yet.
    image: HashMap<String, FileMeta>,
    changes: BTreeMap<String, Kind>,
}

impl Differ {
    pub fn new(image: impl IntoIterator<Item = FileMeta>) -> Differ {
        Differ {
            image: image.into_iter().map(|m| (m.path.clone(), m)).collect(),
            changes: BTreeMap::new(),
        }
    }

    /// One entry of the container's file system.
    pub fn see(&mut self, now: FileMeta) {
        let before = self.image.remove(&now.path);
        if ignored(&now.path) {
            return;
        }
        match before {
            None => {
                self.changes.insert(now.path, ADDED);
            }
            Some(before) if now.changed_from(&before) => {
                self.changes.insert(now.path, MODIFIED);
            }
            Some(_) => {}
        }
    }

    /// Every change, by path.
    pub fn finish(mut self) -> Vec<(String, Kind)> {
        for path in self.image.keys() {
            if !ignored(path) && !self.image.contains_key(parent_of(path)) {
                self.changes.insert(path.clone(), DELETED);
            }
        }
        let changed: Vec<String> = self.changes.keys().cloned().collect();
        for path in changed {
            let mut p = parent_of(&path);
            while p != "/" {
                self.changes.entry(p.to_string()).or_insert(MODIFIED);
                p = parent_of(p);
            }
        }
        self.changes.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> FileMeta {
        FileMeta {
            path: path.into(),
            mode: 0o100644,
            size,
            mtime: 1,
            ..Default::default()
        }
    }

    fn dir(path: &str) -> FileMeta {
        FileMeta {
            path: path.into(),
            mode: 0o040755,
            size: 4096,
            mtime: 1,
            ..Default::default()
        }
    }

    #[test]
    fn docker_rules() {
        let image = [
            dir("/etc"),
            file("/etc/passwd", 10),
            file("/etc/group", 5),
            dir("/old"),
            file("/old/f", 1),
            dir("/usr"),
            dir("/usr/bin"),
            file("/usr/bin/x", 3),
        ];
        let mut d = Differ::new(image);
        let mut etc = dir("/etc");
        etc.mtime = 99; // a directory's time alone is no change
        etc.size = 8192;
        for m in [
            etc,
            file("/etc/passwd", 11),
            file("/etc/group", 5),
            dir("/usr"),
            dir("/usr/bin"),
            file("/usr/bin/x", 3),
            dir("/usr/bin/new"),
            file("/usr/bin/new/y", 1),
            dir("/proc"),
            file("/etc/hostname", 3),
            dir("/lost+found"),
        ] {
            d.see(m);
        }
        let got: Vec<(String, Kind)> = d.finish();
        let want = [
            ("/etc", MODIFIED),
            ("/etc/passwd", MODIFIED),
            ("/old", DELETED),
            ("/usr", MODIFIED),
            ("/usr/bin", MODIFIED),
            ("/usr/bin/new", ADDED),
            ("/usr/bin/new/y", ADDED),
        ];
        let want: Vec<(String, Kind)> = want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn owners_and_modes_count_for_directories() {
        let mut d = Differ::new([dir("/srv")]);
        let mut srv = dir("/srv");
        srv.uid = 1000;
        d.see(srv);
        assert_eq!(d.finish(), [("/srv".to_string(), MODIFIED)]);
    }
}
