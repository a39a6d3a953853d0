//! Unpacking a tenant's tar archive into a volume's tree.
//!
//! The entries are written by the image crate's [`Unpacker`] (no `..` or absolute paths, never
//! through a symlink, files created `O_EXCL|O_NOFOLLOW`, owners, modes and times from the
//! headers), with one difference from image layers: a parent that is a symlink or a file is an
//! error here, not replaced ([`Parents::Refuse`]).
//!
//! The headers are read here, not by the `tar` crate's own parser, because that one reads a
//! GNU long name or a pax header into memory whole, whatever size it claims: a small gzip could
//! make hyperd allocate gigabytes. Here those are read only up to [`MAX_EXTENSION`] bytes, and
//! the archive's layout is the one the headers' own sizes give (a pax `size` that differs is
//! refused, so no two readers could see different archives).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{tree_size, SourceError, ENTRY_OVERHEAD};
use crate::unpack::{entry_path, Node, NodeKind, Parents, Unpacker};

/// Largest GNU long name, long link name or pax header read (real ones are under a few KiB).
const MAX_EXTENSION: u64 = 1 << 20;

/// Bytes of one tar header block, charged to the budget for every header read.
const HEADER: u64 = 512;

/// Unpacks the tar archive at `tar` (plain, gzip or zstd) into `tree` (an existing, empty
/// directory, in a directory only root may enter: entries keep their owners and set-id bits)
/// and returns the tree's size as [`tree_size`](super::tree_size) measures it.
///
/// The archive is a directory's tar (its root entry `.`, then paths relative to it) or a single
/// file under its name. Written: regular files, directories, symlinks (targets kept as they
/// are; they only resolve inside the guest) and hard links to earlier entries. Refused, with
/// the entry named: paths with `..` or absolute ones, entries below a symlink or a file of the
/// archive, device nodes, fifos and sparse files (a volume source is files, and a device node
/// has no business on the host), and archives that are not tar at all. `limit_bytes` (the
/// volume's size) bounds the file bytes plus [`ENTRY_OVERHEAD`] per entry (and per directory
/// an entry's path makes on its way), checked before each entry is written. On error `tree` may hold part of the content.
pub fn unpack_upload(tar: &Path, tree: &Path, limit_bytes: u64) -> Result<u64, SourceError> {
    let reader = crate::layer::open_decompressed(tar)?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(not_tar)?.raw(true);
    let mut unpacker = Unpacker::new(tree, Parents::Refuse);
    let mut budget = Budget {
        used: 0,
        limit: limit_bytes,
    };
    let mut pending = Pending::default();
    let mut seen = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| match seen {
            0 => not_tar(e),
            n => unreadable(n, e),
        })?;
        seen += 1;
        budget.charge(HEADER)?;
        if pending.absorb(&mut entry, &mut budget)? {
            continue;
        }
        let said = std::mem::take(&mut pending);
        budget.charge(ENTRY_OVERHEAD.saturating_add(entry.size()))?;
        write_entry(&mut unpacker, tree, &mut entry, said, &mut budget)?;
    }
    if seen == 0 {
        return Err(SourceError::NotTar);
    }
    if pending != Pending::default() {
        return Err(bad("the archive ends with a long name or pax header"));
    }
    unpacker.finish()?;
    tree_size(tree)
}

fn bad(reason: impl ToString) -> SourceError {
    SourceError::BadArchive {
        reason: reason.to_string(),
    }
}

/// The tar reader's errors quote the bytes they choke on, which may be anything that answered
/// a URL: they go to the log, the tenant gets a fixed text.
fn not_tar(e: std::io::Error) -> SourceError {
    tracing::debug!(error = %e, "not a tar archive");
    SourceError::NotTar
}

fn unreadable(entries_read: usize, e: std::io::Error) -> SourceError {
    tracing::debug!(error = %e, entries_read, "unreadable tar entry");
    bad(format!(
        "the entry after the first {entries_read} cannot be read"
    ))
}

/// A header field that does not parse; the field's bytes are not quoted (see [`not_tar`]).
fn bad_field(rel: &Path, field: &str) -> SourceError {
    bad(format!(
        "{}: the {field} field does not parse",
        rel.display()
    ))
}

/// Bytes charged against the volume's size so far.
struct Budget {
    used: u64,
    limit: u64,
}

impl Budget {
    fn charge(&mut self, bytes: u64) -> Result<(), SourceError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            return Err(SourceError::TooLarge {
                what: "the unpacked archive (file bytes plus 4 KiB per entry)",
                size: self.used,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

type RawEntry<'a> = tar::Entry<'a, Box<dyn Read>>;

/// What long-name and pax headers said about the next entry.
#[derive(Debug, Default, PartialEq)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<u64>,
    size: Option<u64>,
    sparse: bool,
}

impl Pending {
    /// Takes in `entry` if it is a header about the next entry (true), or says it is an entry
    /// of its own (false). Global pax headers are skipped: nothing here uses their defaults.
    fn absorb(&mut self, entry: &mut RawEntry, budget: &mut Budget) -> Result<bool, SourceError> {
        match entry.header().entry_type() {
            tar::EntryType::GNULongName => self.path = Some(read_long_name(entry, budget)?),
            tar::EntryType::GNULongLink => self.link = Some(read_long_name(entry, budget)?),
            tar::EntryType::XHeader => self.pax(&read_extension(entry, budget)?)?,
            tar::EntryType::XGlobalHeader => budget.charge(entry.size())?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Takes the pax records this unpacking uses; the others (atime, xattrs...) are dropped.
    fn pax(&mut self, data: &[u8]) -> Result<(), SourceError> {
        for ext in tar::PaxExtensions::new(data) {
            let ext = ext.map_err(bad)?;
            let key = ext.key().map_err(bad)?;
            let number = || -> Result<u64, SourceError> {
                let v = ext.value().map_err(bad)?;
                // mtime may have a fraction, or be before 1970 (then 0 will do).
                let whole = v.split('.').next().unwrap_or_default();
                match whole.strip_prefix('-') {
                    Some(_) => Ok(0),
                    None => whole.parse().map_err(|_| bad(format!("pax {key}={v}"))),
                }
            };
            match key {
                "path" => self.path = Some(ext.value_bytes().to_vec()),
                "linkpath" => self.link = Some(ext.value_bytes().to_vec()),
                "uid" => self.uid = Some(number()?),
                "gid" => self.gid = Some(number()?),
                "mtime" => self.mtime = Some(number()?),
                "size" => self.size = Some(number()?),
                k if k.starts_with("GNU.sparse.") => self.sparse = true,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The data of a long-name or pax header, refused past [`MAX_EXTENSION`].
fn read_extension(entry: &mut RawEntry, budget: &mut Budget) -> Result<Vec<u8>, SourceError> {
    let size = entry.size();
    if size > MAX_EXTENSION {
        return Err(bad(format!(
            "a long name or pax header of {size} bytes (at most {MAX_EXTENSION})"
        )));
    }
    budget.charge(size)?;
    let mut data = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut data).map_err(bad)?;
    Ok(data)
}

/// A GNU long name or link name, without the NULs that end it.
fn read_long_name(entry: &mut RawEntry, budget: &mut Budget) -> Result<Vec<u8>, SourceError> {
    let mut name = read_extension(entry, budget)?;
    while name.last() == Some(&0) {
        name.pop();
    }
    Ok(name)
}

/// A path from header bytes (no NUL: the kernel would cut it there).
fn bytes_path(bytes: &[u8]) -> Result<PathBuf, SourceError> {
    if bytes.contains(&0) {
        return Err(bad("a path with a NUL byte"));
    }
    Ok(PathBuf::from(OsStr::from_bytes(bytes)))
}

/// Writes one entry, with what its extension headers said taking precedence over its own.
fn write_entry(
    unpacker: &mut Unpacker,
    tree: &Path,
    entry: &mut RawEntry,
    said: Pending,
    budget: &mut Budget,
) -> Result<(), SourceError> {
    let raw_path = match &said.path {
        Some(p) => bytes_path(p)?,
        None => bytes_path(&entry.path_bytes())?,
    };
    let rel = entry_path(&raw_path)?;
    budget.charge(ENTRY_OVERHEAD.saturating_mul(missing_parents(tree, &rel)))?;
    if said.size.is_some_and(|s| s != entry.size()) {
        return Err(bad(format!(
            "{}: a pax size that overrides the header's is not supported",
            rel.display()
        )));
    }
    let h = entry.header();
    let id = |v: u64| u32::try_from(v).map_err(|_| bad(format!("{}: owner {v}", rel.display())));
    let uid = id(match said.uid {
        Some(u) => u,
        None => h.uid().map_err(|_| bad_field(&rel, "uid"))?,
    })?;
    let gid = id(match said.gid {
        Some(g) => g,
        None => h.gid().map_err(|_| bad_field(&rel, "gid"))?,
    })?;
    let mode = h.mode().map_err(|_| bad_field(&rel, "mode"))?;
    let mtime = said.mtime.unwrap_or_else(|| h.mtime().unwrap_or(0));
    let link = match said.link {
        Some(l) => Some(bytes_path(&l)?),
        None => entry
            .link_name_bytes()
            .map(|l| bytes_path(&l))
            .transpose()?,
    };
    let kind = node_kind(entry.header().entry_type(), &rel, link, said.sparse)?;
    let node = Node {
        rel: &rel,
        kind,
        uid,
        gid,
        mode,
        mtime,
    };
    unpacker.create(&node, entry, "upload")?;
    Ok(())
}

/// The directories writing `rel` makes on its way (its parents not there yet): each takes an
/// entry's room as much as one the archive names, so each is charged like one. Otherwise one
/// entry named `a/a/a/...` would make thousands of directories for the price of one.
fn missing_parents(tree: &Path, rel: &Path) -> u64 {
    let parents: Vec<_> = rel
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .collect();
    let mut cur = tree.to_path_buf();
    for (i, c) in parents.iter().enumerate() {
        cur.push(c);
        if std::fs::symlink_metadata(&cur).is_err() {
            return (parents.len() - i) as u64;
        }
    }
    0
}

/// What an entry of type `kind` makes, or why it is refused.
fn node_kind(
    kind: tar::EntryType,
    rel: &Path,
    link: Option<PathBuf>,
    sparse: bool,
) -> Result<NodeKind, SourceError> {
    let refuse = |what: &str| SourceError::Unsupported {
        path: rel.display().to_string(),
        kind: what.to_string(),
    };
    let link = || link.ok_or_else(|| bad(format!("link {} has no target", rel.display())));
    Ok(match kind {
        _ if sparse => return Err(refuse("a sparse file")),
        tar::EntryType::Regular | tar::EntryType::Continuous => NodeKind::File,
        tar::EntryType::Directory => NodeKind::Dir,
        tar::EntryType::Symlink => NodeKind::Symlink(link()?),
        tar::EntryType::Link => NodeKind::HardLink(entry_path(&link()?)?),
        tar::EntryType::GNUSparse => return Err(refuse("a sparse file")),
        tar::EntryType::Char => return Err(refuse("a character device")),
        tar::EntryType::Block => return Err(refuse("a block device")),
        tar::EntryType::Fifo => return Err(refuse("a fifo")),
        other => {
            return Err(refuse(&format!(
                "a tar entry of type {:?}",
                other.as_byte() as char
            )))
        }
    })
}
