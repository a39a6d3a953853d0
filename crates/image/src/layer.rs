//! Layer blobs: decompression, digests, and the checks done once when a layer is loaded (those of
//! each entry here; those that depend on the layers below with the image, `unpack::check_layers`).
//!
//! A layer is stored uncompressed, named by its diff ID (the sha256 of the uncompressed tar),
//! which is what the image config's `rootfs.diff_ids` lists; so a layer shared by several images
//! is stored once whatever compression each archive used.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{ImageError, IoContext, Result};
use crate::unpack::read_entry;

/// Opens a layer blob, decompressing gzip or zstd by their magic numbers.
pub(crate) fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    let head = r.fill_buf().ctx(|| format!("reading {}", path.display()))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = ruzstd::streaming_decoder::StreamingDecoder::new(r).map_err(|e| {
            ImageError::BadLayer {
                layer: path.display().to_string(),
                reason: format!("zstd: {e}"),
            }
        })?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(r))
    }
}

/// Hex sha256 of a whole file.
pub(crate) fn file_sha256(path: &Path) -> Result<String> {
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).ctx(|| format!("reading {}", path.display()))?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Passes reads through while hashing them and copying them to `out`.
struct Tee<R, W> {
    inner: R,
    hash: Sha256,
    out: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// What ingesting a layer found.
pub(crate) struct Ingested {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Bytes of file content once unpacked.
    pub size: u64,
}

/// Decompresses the blob at `src` into `dest`, checking every entry as unpacking will
/// (`unpack::read_entry`: names and hard link targets inside the root, whiteouts, owners), and
/// returns its diff ID and unpacked size.
pub(crate) fn ingest(src: &Path, dest: &Path, label: &str) -> Result<Ingested> {
    let out = File::create(dest).ctx(|| format!("creating {}", dest.display()))?;
    let tee = Tee {
        inner: open_decompressed(src)?,
        hash: Sha256::new(),
        out: io::BufWriter::new(out),
    };
    let mut archive = tar::Archive::new(tee);
    let mut size = 0u64;
    let bad = |reason: String| ImageError::BadLayer {
        layer: label.to_string(),
        reason,
    };
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let entry = entry.map_err(|e| bad(e.to_string()))?;
        read_entry(&entry, label)?;
        if entry.header().entry_type().is_file() {
            size += entry.header().size().unwrap_or(0);
        }
    }
    let mut tee = archive.into_inner();
    // Whatever follows the end-of-archive blocks is part of the diff ID too.
    io::copy(&mut tee, &mut io::sink()).map_err(|e| bad(e.to_string()))?;
    let mut out = tee
        .out
        .into_inner()
        .map_err(|e| e.into_error())
        .ctx(|| format!("writing {}", dest.display()))?;
    out.flush().ctx(|| format!("writing {}", dest.display()))?;
    out.sync_all()
        .ctx(|| format!("writing {}", dest.display()))?;
    Ok(Ingested {
        diff_id: format!("sha256:{}", hex::encode(tee.hash.finalize())),
        size,
    })
}

/// Bytes of file content in a stored (uncompressed) layer tar, skipping over the contents.
pub(crate) fn content_size(path: &Path) -> Result<u64> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(BufReader::new(f));
    let bad = |e: io::Error| ImageError::BadLayer {
        layer: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut size = 0;
    for entry in archive.entries_with_seek().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if entry.header().entry_type().is_file() {
            size += entry.header().size().unwrap_or(0);
        }
    }
    Ok(size)
}
