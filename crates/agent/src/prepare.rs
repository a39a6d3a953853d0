//! `PrepareRoot` (standby VMs prepared for an image only): after the rehearsal, mount the root
//! disk now behind the slot (a pristine copy of the image's empty overlay) read-only and walk
//! what a `Start` of that image reads from it: the user's look-up, the program's, the program
//! and its ELF interpreter read into the page cache. A claim by a container of that image then
//! finds the root mounted (`Start` remounts it read-write) and its files cached, instead of
//! mounting the disk and reading them through virtio-blk, which under TCG is much of a claim.
//! Nothing is written (the disk stays byte-equal to every pristine copy, which is what lets it
//! become the container's own) and no program of the image runs. A look-up that fails is no
//! failure here: `Start` reports it, as it would without the preparation.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use agent_proto::ProcessSpec;

use crate::rootfs::{self, ROOTFS};
use crate::{lookup, process};

/// The longest ELF interpreter path read.
const MAX_INTERP: usize = 256;
/// The bytes one readahead(2) asks for: the kernel's default readahead window (128 KiB). The
/// kernel cuts a readahead to the larger of the device's largest request and that window, so a
/// step of it is read whole.
const READAHEAD_STEP: u64 = 128 << 10;
/// An ELF file's headers looked at for its interpreter: the program headers of any linker's
/// output sit right after the ELF header, well within this.
const HEADERS: usize = 4096;

/// Mount the root read-only and read ahead; the time it took and the bytes read ahead, or why
/// the root could not be mounted.
pub fn run(device: &str, spec: &ProcessSpec, preread_max: u64) -> Result<(u64, u64), String> {
    let t0 = Instant::now();
    rootfs::mount_read_only(device).map_err(|e| crate::error_chain(&e))?;
    let bytes = warm(spec, preread_max);
    Ok((t0.elapsed().as_millis() as u64, bytes))
}

/// The look-ups of a `Start` of `spec`, and the program and its interpreter read ahead (at
/// most `budget` bytes): the bytes read.
fn warm(spec: &ProcessSpec, budget: u64) -> u64 {
    let root = Path::new(ROOTFS);
    let Ok(settled) = process::Settled::in_root(root, spec) else {
        return 0;
    };
    let prog = process::program(spec);
    let Ok(exe) = process::find_program(root, prog, &settled.env, &settled.cwd) else {
        return 0;
    };
    let mut left = budget;
    if let Some(interp) = read_ahead(root, &exe, &mut left) {
        read_ahead(root, &interp, &mut left);
    }
    budget - left
}

/// Read the regular file at `path` in `root` into the page cache, at most `left` bytes (taken
/// off it); its ELF interpreter, if it names one. Anything but a regular file is left unopened
/// (the image's: a FIFO would block the open, a device node could act on it).
fn read_ahead(root: &Path, path: &str, left: &mut u64) -> Option<String> {
    let located = lookup::open_in_root(root, path, libc::O_PATH)?;
    let st = nix::sys::stat::fstat(located.as_raw_fd()).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    // The file just checked, opened for reading through its descriptor (the root is mounted
    // read-only and nothing else runs: it cannot have been replaced).
    let file = std::fs::File::open(format!("/proc/self/fd/{}", located.as_raw_fd())).ok()?;
    let len = u64::try_from(st.st_size).ok()?.min(*left);
    // One readahead(2) of the whole file would stop at the device's largest request (1280 KiB
    // here: two thirds of Debian's static busybox), and a claim would read the rest.
    for offset in (0..len).step_by(READAHEAD_STEP as usize) {
        let step = READAHEAD_STEP.min(len - offset);
        // SAFETY: readahead on a descriptor we own; it reads into the page cache only.
        unsafe { libc::readahead(file.as_raw_fd(), offset as i64, step as usize) };
    }
    *left -= len;
    let mut head = vec![0u8; HEADERS];
    let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0).ok()?;
    head.truncate(n);
    let (offset, size) = interp_of(&head)?;
    let mut name = vec![0u8; size];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut name, offset).ok()?;
    let name = name.split(|b| *b == 0).next()?;
    String::from_utf8(name.to_vec())
        .ok()
        .filter(|n| n.starts_with('/'))
}

/// Where a 64-bit little-endian ELF file whose first bytes are `head` names its interpreter
/// (`PT_INTERP`): its offset and length, if its program headers lie within `head` and the
/// name is at most [`MAX_INTERP`] bytes. Anything else (another format, a static program, a
/// malformed file) is `None`.
fn interp_of(head: &[u8]) -> Option<(u64, usize)> {
    const PT_INTERP: u32 = 3;
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let bytes = |o: usize, n: usize| head.get(o..o.checked_add(n)?);
    let u32_at = |o: usize| Some(u32::from_le_bytes(bytes(o, 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(bytes(o, 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
    if phentsize < 56 {
        return None;
    }
    (0..phnum).find_map(|i| {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            return None;
        }
        let size = usize::try_from(u64_at(ph.checked_add(32)?)?).ok()?;
        (size > 0 && size <= MAX_INTERP).then_some((u64_at(ph.checked_add(8)?)?, size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF header and `phnum` program headers of type `types` at offset 64.
    fn elf(types: &[u32], interp_at: u64, interp_len: u64) -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            ph[8..16].copy_from_slice(&interp_at.to_le_bytes());
            ph[32..40].copy_from_slice(&interp_len.to_le_bytes());
            e.extend(ph);
        }
        e
    }

    #[test]
    fn the_interpreter_of_a_dynamic_program_and_none_of_a_static_one() {
        assert_eq!(interp_of(&elf(&[6, 3, 1], 0x238, 28)), Some((0x238, 28)));
        assert_eq!(interp_of(&elf(&[1, 1], 0x238, 28)), None);
    }

    #[test]
    fn hostile_headers_give_no_interpreter_and_never_panic() {
        // Not ELF, 32-bit, big-endian, truncated.
        assert_eq!(interp_of(b"#!/bin/sh\n"), None);
        let mut e = elf(&[3], 0x238, 28);
        e[4] = 1;
        assert_eq!(interp_of(&e), None);
        let mut e = elf(&[3], 0x238, 28);
        e[5] = 2;
        assert_eq!(interp_of(&e), None);
        assert_eq!(interp_of(&elf(&[3], 0x238, 28)[..100]), None);
        // A name too long, or empty.
        assert_eq!(interp_of(&elf(&[3], 0x238, 1 << 20)), None);
        assert_eq!(interp_of(&elf(&[3], 0x238, 0)), None);
        // Program headers beyond the bytes read, or at offsets that overflow.
        let mut e = elf(&[3], 0x238, 28);
        e[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(interp_of(&e), None);
        let mut e = elf(&[3], 0x238, 28);
        e[0x38..0x3a].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            interp_of(&e),
            Some((0x238, 28)),
            "the first header is still read"
        );
        e[0x36..0x38].copy_from_slice(&u16::MAX.to_le_bytes());
        e[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(interp_of(&e), None);
        e[0x36..0x38].copy_from_slice(&8u16.to_le_bytes());
        assert_eq!(interp_of(&e), None, "headers smaller than an Elf64_Phdr");
    }
}
