//! Facts about the host this node runs on.

/// The host's memory (`MemTotal`) in bytes; 0 when /proc/meminfo cannot be read.
pub fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_mem_total(&m))
        .unwrap_or(0)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    kib_field(meminfo, "MemTotal:")
}

/// What the host's memory could give new work without swapping (`MemAvailable`) in bytes;
/// `None` when /proc/meminfo cannot be read.
pub fn memory_available() -> Option<u64> {
    kib_field(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable:",
    )
}

/// A process's proportional share of the memory it maps (`Pss` of `/proc/PID/smaps_rollup`)
/// in bytes; `None` when it is gone.
pub fn pss_bytes(pid: i32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&rollup, "Pss:")
}

/// The `NAME: N kB` line's N, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let kib: u64 = text
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn mem_total_is_read_in_bytes() {
        let m = "MemFree:  10 kB\nMemTotal:       24683292 kB\n";
        assert_eq!(super::parse_mem_total(m), Some(24683292 * 1024));
        assert_eq!(super::parse_mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn some_memory_is_available_and_never_more_than_the_host_has() {
        let available = super::memory_available().unwrap();
        assert!(
            available > 0 && available <= super::memory_bytes(),
            "{available}"
        );
    }

    #[test]
    fn this_process_has_a_pss() {
        let pss = super::pss_bytes(std::process::id() as i32).unwrap();
        assert!(pss > 0 && pss.is_multiple_of(1024), "{pss}");
        assert_eq!(super::pss_bytes(-1), None);
    }
}
