//! SHA-256 of the files a VM is built from (QEMU, kernel, agent, modules, initramfs), memoized:
//! hyperd keys the initramfs on them at every start, the shim keys templates on them, and
//! hashing a 14 MB kernel again each time cost a start ~20 ms.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The hex SHA-256 of `path`'s content, memoized under the directory `cache` by the file's
/// identity and times (device, inode, size, mtime, ctime): a changed file has another ctime,
/// which no caller can set, so its memo is never reused. A memo that cannot be written only
/// costs the next caller the hashing.
pub fn file_sha256(cache: &Path, path: &Path) -> std::io::Result<String> {
    let md = std::fs::metadata(path)?;
    let ident = format!(
        "{}\n{}:{}:{}:{}.{}:{}.{}",
        path.display(),
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    );
    let memo = cache.join(hex::encode(&Sha256::digest(ident.as_bytes())[..16]));
    if let Ok(h) = std::fs::read_to_string(&memo) {
        if h.len() == 64 {
            return Ok(h);
        }
    }
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let h = hex::encode(hasher.finalize());
    let _ = std::fs::create_dir_all(cache);
    let tmp = memo.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, &h).is_ok() {
        let _ = std::fs::rename(&tmp, &memo);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = std::env::temp_dir().join(format!("vm-digest-{}", std::process::id()));
        let cache = dir.join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"one").unwrap();
        let one = file_sha256(&cache, &file).unwrap();
        assert_eq!(one, hex::encode(Sha256::digest(b"one")));
        // Memoized: the same answer from the memo.
        assert_eq!(file_sha256(&cache, &file).unwrap(), one);
        // Same size, other content: its ctime moved, so it is hashed again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, b"two").unwrap();
        assert_eq!(
            file_sha256(&cache, &file).unwrap(),
            hex::encode(Sha256::digest(b"two"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
