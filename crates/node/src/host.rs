//! Facts about the host this node runs on.

/// The host's memory (`MemTotal`) in bytes; 0 when /proc/meminfo cannot be read.
pub fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_mem_total(&m))
        .unwrap_or(0)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
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
}
