//! What the host hands a guest so that it does not share its siblings' identity: randomness
//! and the clock (see `agent_proto::HostMsg::Start`).

/// `n` bytes from the host's CSPRNG (fewer only if getrandom fails, which it does not once the
/// host has booted).
pub fn host_random(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: getrandom writes at most `n - filled` bytes into the rest of `buf`.
        let r = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r <= 0 {
            break;
        }
        filled += r as usize;
    }
    buf
}

/// The host's CLOCK_REALTIME in ns since the epoch.
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
