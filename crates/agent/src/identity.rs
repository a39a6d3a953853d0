//! Identity a guest must not share with its siblings. A VM restored from a template wakes up
//! with the template's clock and the template's random generator state: every VM from one
//! template would produce the same `/dev/urandom` bytes until the kernel reseeds on its own
//! (minutes later). So before the container's process starts, `Start` brings host randomness
//! and the host's clock, and the agent applies them (on cold boots too: one path for both).

use std::os::fd::AsRawFd;

use crate::init::log;

// <linux/random.h>: RNDADDENTROPY = _IOW('R', 0x03, int[2]); RNDRESEEDCRNG = _IO('R', 0x07).
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// What `Start` (and a rehearsal of it) brings: the host's clock, then its randomness.
pub fn renew(realtime_ns: u64, entropy: &[u8]) {
    set_clock(realtime_ns);
    reseed(entropy);
}

/// Set CLOCK_REALTIME to `ns` since the epoch (0: leave it).
pub fn set_clock(ns: u64) {
    if ns == 0 {
        return;
    }
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads one valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        log!("clock_settime: {}", std::io::Error::last_os_error());
    }
}

/// Mix `seed` into the kernel's input pool, credited as entropy, and force the CRNG to reseed
/// from it now, so every later read of /dev/urandom (and getrandom) differs from a sibling's.
pub fn reseed(seed: &[u8]) {
    if seed.is_empty() {
        return;
    }
    let f = match std::fs::OpenOptions::new().write(true).open("/dev/urandom") {
        Ok(f) => f,
        Err(e) => {
            log!("open /dev/urandom: {e}");
            return;
        }
    };
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info: Vec<u8> = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    // Keep the buffer u32-aligned in length, as the kernel reads whole words.
    while !info.len().is_multiple_of(4) {
        info.push(0);
    }
    // SAFETY: RNDADDENTROPY reads a rand_pool_info header and buf_size bytes from the pointer;
    // `info` holds exactly that.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } != 0 {
        log!("RNDADDENTROPY: {}", std::io::Error::last_os_error());
        // Still mix the bytes in (uncredited) so the stream diverges at the next reseed.
        let _ = std::io::Write::write_all(&mut &f, seed);
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG, 0) } != 0 {
        log!("RNDRESEEDCRNG: {}", std::io::Error::last_os_error());
    }
}
