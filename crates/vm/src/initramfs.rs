//! The guest initramfs: an uncompressed newc cpio holding the agent as `/init`, the virtio
//! modules the agent loads (flat, in `/lib/modules/`), `/dev/console` and the empty mount points.
//!
//! Uncompressed because every cold boot unpacks it inside the guest, where under TCG inflating
//! gzip cost ~40 ms per MB of content (~0.15 s for the agent and modules) against a copy; the
//! host reads a few MB more, from its page cache.
//!
//! Output is deterministic (fixed inode numbers, mtime 0, owner root) so callers can cache it by
//! a key of (agent, kernel version).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The modules the agent loads, in load order (DESIGN "Testing on these machines").
pub const VIRTIO_MODULES: [&str; 8] = [
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "failover",
    "net_failover",
    "virtio_net",
];

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a static executable (it needs a dynamic loader, which the guest has none of): \
         build the agent with scripts/build (static, --target x86_64-unknown-linux-gnu) or pass that one with --agent"
    )]
    AgentNotStatic { path: PathBuf },
    #[error("module {name}.ko not found under {dir}")]
    MissingModule { name: String, dir: PathBuf },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Build the initramfs at `out` (written to a temp file and renamed over, so a concurrent reader
/// never sees half a file). `modules_dir` is searched recursively for `<name>.ko`, so both the
/// flat `DATA/kernel/modules/` and an unpacked `lib/modules/<ver>/kernel/` tree work.
pub fn build_initramfs(
    agent_binary: &Path,
    modules_dir: &Path,
    out: &Path,
) -> Result<(), InitramfsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| InitramfsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let agent = read(agent_binary)?;
    check_agent(agent_binary, &agent)?;
    let mut modules = Vec::new();
    for name in VIRTIO_MODULES {
        let file = format!("{name}.ko");
        let path = find_file(modules_dir, &file).ok_or_else(|| InitramfsError::MissingModule {
            name: name.to_string(),
            dir: modules_dir.to_path_buf(),
        })?;
        modules.push((file, read(&path)?));
    }

    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let werr = |source| InitramfsError::Write {
        path: out.to_path_buf(),
        source,
    };
    let result = (|| -> io::Result<()> {
        let mut w = Newc::new(BufWriter::new(File::create(&tmp)?));
        for d in ["dev", "proc", "sys", "run", "tmp", "lib", "lib/modules"] {
            w.entry(d, 0o040755, &[], 0)?;
        }
        // /dev/console (char 5:1): the kernel opens it for init's stdio before devtmpfs exists.
        w.entry("dev/console", 0o020600, &[], (5 << 8) | 1)?;
        w.entry("init", 0o100755, &agent, 0)?;
        for (file, data) in &modules {
            w.entry(&format!("lib/modules/{file}"), 0o100644, data, 0)?;
        }
        w.trailer()?;
        let f = w
            .into_inner()
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    std::fs::rename(&tmp, out).map_err(werr)
}

/// Refuses an agent binary (`bytes`, read from `path`) that cannot run as the guest's `/init`.
pub fn check_agent(path: &Path, bytes: &[u8]) -> Result<(), InitramfsError> {
    if is_static_elf(bytes) {
        Ok(())
    } else {
        Err(InitramfsError::AgentNotStatic {
            path: path.to_path_buf(),
        })
    }
}

/// Whether `elf` is a 64-bit little-endian ELF without a `PT_INTERP` program header: the agent
/// runs as the guest's `/init`, where no dynamic loader exists, and a dynamic one fails there
/// only as a kernel panic ("No working init found").
fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB.
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let at = phoff as usize + i * phentsize;
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let direct = dir.join(name);
    if direct.is_file() {
        return Some(direct);
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .filter(|p| p.is_dir())
        .find_map(|p| find_file(&p, name))
}

/// Minimal newc ("070701") cpio writer.
struct Newc<W: Write> {
    w: W,
    ino: u32,
}

impl<W: Write> Newc<W> {
    fn new(w: W) -> Self {
        Newc { w, ino: 1 }
    }

    /// `rdev` is `(major << 8) | minor` for device nodes.
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: u32) -> io::Result<()> {
        let ino = self.ino;
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        self.header(
            ino,
            mode,
            nlink,
            data.len() as u32,
            rdev >> 8,
            rdev & 0xff,
            name,
        )?;
        self.w.write_all(data)?;
        self.pad(data.len())
    }

    fn trailer(&mut self) -> io::Result<()> {
        self.header(0, 0, 1, 0, 0, 0, "TRAILER!!!")
    }

    fn into_inner(self) -> W {
        self.w
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rmaj: u32,
        rmin: u32,
        name: &str,
    ) -> io::Result<()> {
        let namesize = name.len() + 1;
        let h = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, 0
        );
        self.w.write_all(h.as_bytes())?;
        self.w.write_all(name.as_bytes())?;
        self.w.write_all(&[0])?;
        self.pad(h.len() + namesize)
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.w.write_all(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
        let agent = dir.join("agent");
        std::fs::write(&agent, elf_with_program_headers(&[1])).unwrap();
        let mods = dir.join("mods/kernel/drivers");
        std::fs::create_dir_all(&mods).unwrap();
        for m in VIRTIO_MODULES {
            std::fs::write(mods.join(format!("{m}.ko")), m.as_bytes()).unwrap();
        }
        (agent, dir.join("mods"))
    }

    #[test]
    fn deterministic_and_complete() {
        let dir = std::env::temp_dir().join(format!("vm-initrd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (agent, mods) = fixture(&dir);
        let a = dir.join("a.img");
        let b = dir.join("b.img");
        build_initramfs(&agent, &mods, &a).unwrap();
        build_initramfs(&agent, &mods, &b).unwrap();
        let raw = std::fs::read(&a).unwrap();
        assert_eq!(raw, std::fs::read(&b).unwrap());
        let text = String::from_utf8_lossy(&raw);
        assert!(raw.starts_with(b"070701"));
        assert!(text.contains("init\0"));
        assert!(raw
            .windows(64)
            .any(|w| w == &elf_with_program_headers(&[1])[..64]));
        assert!(text.contains("TRAILER!!!"));
        // modules in load order
        let pos: Vec<usize> = VIRTIO_MODULES
            .iter()
            .map(|m| {
                text.find(&format!("lib/modules/{m}.ko\0"))
                    .unwrap_or_else(|| panic!("{m}"))
            })
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An ELF64 header followed by program headers of the given types (no segments behind them).
    fn elf_with_program_headers(types: &[u32]) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for kind in types {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&kind.to_le_bytes());
            elf.extend_from_slice(&ph);
        }
        elf
    }

    #[test]
    fn a_dynamic_or_foreign_agent_is_refused() {
        let dir = std::env::temp_dir().join(format!("vm-initrd-dyn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (agent, mods) = fixture(&dir);
        for bad in [
            elf_with_program_headers(&[6, 3, 1]),
            b"#!/bin/sh\n".to_vec(),
        ] {
            std::fs::write(&agent, bad).unwrap();
            let err = build_initramfs(&agent, &mods, &dir.join("x.img")).unwrap_err();
            assert!(
                matches!(err, InitramfsError::AgentNotStatic { .. }),
                "{err}"
            );
        }
        assert!(!dir.join("x.img").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_module_is_an_error() {
        let dir = std::env::temp_dir().join(format!("vm-initrd-miss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (agent, mods) = fixture(&dir);
        std::fs::remove_file(mods.join("kernel/drivers/virtio_net.ko")).unwrap();
        let err = build_initramfs(&agent, &mods, &dir.join("x.img")).unwrap_err();
        assert!(matches!(err, InitramfsError::MissingModule { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
