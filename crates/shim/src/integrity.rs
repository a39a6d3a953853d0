//! Template integrity (issue 17, finding 6): a template's memory is verified before every VM is
//! restored from it.
//!
//! Why verify rather than prevent: every restored QEMU maps the template's RAM file private
//! (`share=off`), and QEMU 7.2 opens a `memory-backend-file` read-write unless it is
//! `readonly=on`, which maps guest RAM read-only and breaks the guest (`readonly=on,rom=off`, a
//! private writable mapping of a read-only file, came in 8.2). It opens `mem-path` with
//! open(2), not through fd sets, so no read-only descriptor can be handed in either; and as
//! root (it drops to `-runas` later) it ignores the file's 0444 mode. So each restored QEMU
//! holds a writable descriptor of the file, and one taken over by its guest could write to it.
//! The alternatives cost more: loading RAM through the migration stream gives every VM its own
//! copy of the pages the template's guest touched (~135 MB of a 552 MB file here) where they
//! now share one in the page cache, and a newer QEMU means building and carrying one.
//!
//! What is checked, before every restore (a start without a standby, each standby the pool
//! restores) in `template::ensure`:
//! - the RAM file's ctime, recorded when the template was built: any write through a
//!   descriptor (write, pwrite, a shared mapping, fallocate, truncate) moves it, and it cannot
//!   be set back from user space. Free (a stat);
//! - a SHA-256 of the RAM and device-state files' content (each data extent with its offset:
//!   the guest touched ~135 MB of a 552 MB sparse file), recorded in `meta.json`, which only
//!   root can write: a change however it came (below the file system, a restored backup, a
//!   bug) and not only through a descriptor.
//!
//! A template that fails either is retired (removed: the VMs restored from it keep their
//! mappings) and rebuilt; a new inode, so no VM restored afterwards shares a page with the old
//! one. A standby restored before the change is refused at its claim (the ctime check, a stat on
//! the claim's path), so its memory never reaches a container. What no check before a restore
//! can undo: the VMs already running from the file share the pages they have not written with
//! its page cache, so a write to the file reaches them until it is noticed; those VMs are of the
//! same template generation, and the operator learns of it from hyperd's log (the template is
//! retired with its reason).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The file's ctime, `sec.nsec`.
pub fn ctime_of(p: &Path) -> Option<String> {
    let md = std::fs::metadata(p).ok()?;
    Some(format!("{}.{:09}", md.ctime(), md.ctime_nsec()))
}

/// SHA-256 over `path`'s size and each of its data extents (offset, length, bytes), so that a
/// sparse file is read only where it has data, and a hole made or filled changes it too.
pub fn digest(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        let Some(start) = seek(&f, at, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(&f, start, libc::SEEK_HOLE)?.unwrap_or(size);
        h.update(start.to_le_bytes());
        h.update((end - start).to_le_bytes());
        f.seek(SeekFrom::Start(start))?;
        let mut left = end - start;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
        at = end;
    }
    Ok(hex::encode(h.finalize()))
}

/// lseek(2) with SEEK_DATA or SEEK_HOLE; None past the last data (ENXIO).
fn seek(f: &File, from: u64, whence: libc::c_int) -> std::io::Result<Option<u64>> {
    // SAFETY: lseek on a descriptor we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), from as libc::off_t, whence) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_digest_sees_data_holes_and_size() {
        let dir = std::env::temp_dir().join(format!("integrity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ram");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"guest page", 5 << 20).unwrap();
        f.sync_all().unwrap();
        let d0 = digest(&p).unwrap();
        assert_eq!(digest(&p).unwrap(), d0, "stable");
        // A byte written into a hole.
        f.write_all_at(b"x", 40 << 20).unwrap();
        let d1 = digest(&p).unwrap();
        assert_ne!(d1, d0);
        // A byte changed in the data.
        f.write_all_at(b"G", 5 << 20).unwrap();
        assert_ne!(digest(&p).unwrap(), d1);
        f.write_all_at(b"g", 5 << 20).unwrap();
        assert_eq!(digest(&p).unwrap(), d1, "the content decides");
        f.set_len(65 << 20).unwrap();
        assert_ne!(digest(&p).unwrap(), d1, "the size counts");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
