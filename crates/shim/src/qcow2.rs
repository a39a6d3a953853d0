//! The few fields of a qcow2 header the shim needs: the disk's virtual size (a template's root
//! slot has a fixed one) and the backing file (a claimed standby opens it for the chrooted QEMU).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Longer backing names are not ours (hyperd names a disk under its data root).
const MAX_BACKING_NAME: usize = 4096;

/// A qcow2 header, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The disk's virtual size in bytes.
    pub size: u64,
    backing_offset: u64,
    backing_len: u32,
}

impl Header {
    /// Reads the header at the start of `disk` (positional reads: the file offset is left as
    /// it was).
    pub fn read(disk: &File) -> Result<Self> {
        let mut h = [0u8; 32];
        disk.read_exact_at(&mut h, 0)
            .context("reading the qcow2 header")?;
        if &h[..4] != MAGIC {
            bail!("not a qcow2 image");
        }
        let be64 = |r: std::ops::Range<usize>| u64::from_be_bytes(h[r].try_into().expect("8"));
        Ok(Self {
            backing_offset: be64(8..16),
            backing_len: u32::from_be_bytes(h[16..20].try_into().expect("4")),
            size: be64(24..32),
        })
    }

    /// The backing file `disk` names, if any.
    pub fn backing_file(&self, disk: &File) -> Result<Option<PathBuf>> {
        let len = self.backing_len as usize;
        if self.backing_offset == 0 || len == 0 {
            return Ok(None);
        }
        if len > MAX_BACKING_NAME {
            bail!("the qcow2 header names a backing file of {len} bytes");
        }
        let mut name = vec![0u8; len];
        disk.read_exact_at(&mut name, self.backing_offset)
            .context("reading the qcow2 backing file name")?;
        let name = String::from_utf8(name).context("the qcow2 backing file name is not UTF-8")?;
        Ok(Some(PathBuf::from(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_backing_file_from_the_header() {
        let dir = std::env::temp_dir().join(format!("shim-qcow2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut header = vec![0u8; 200];
        header[..4].copy_from_slice(MAGIC);
        let name = b"/d/images/disks/abc.ext4";
        header[8..16].copy_from_slice(&104u64.to_be_bytes());
        header[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        header[24..32].copy_from_slice(&(10u64 << 30).to_be_bytes());
        header[104..104 + name.len()].copy_from_slice(name);
        let p = dir.join("o.qcow2");
        std::fs::write(&p, &header).unwrap();
        let f = File::open(&p).unwrap();
        let h = Header::read(&f).unwrap();
        assert_eq!(h.size, 10 << 30);
        assert_eq!(
            h.backing_file(&f).unwrap(),
            Some(PathBuf::from("/d/images/disks/abc.ext4"))
        );
        header[8..20].fill(0);
        std::fs::write(&p, &header).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(Header::read(&f).unwrap().backing_file(&f).unwrap(), None);
        header[..4].copy_from_slice(b"RAW!");
        std::fs::write(&p, &header).unwrap();
        assert!(Header::read(&File::open(&p).unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
