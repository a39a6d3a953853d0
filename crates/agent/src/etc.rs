//! The container's `/etc` files that carry its identity and network: `hosts`, `resolv.conf`.
//! Rendering is pure (unit-tested); [`write`] puts a file on the mounted root disk.

use std::net::Ipv4Addr;
use std::path::Path;

/// Docker's localhost block, the start of every `/etc/hosts` Hyper writes.
const LOCALHOST: &str = "127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";

/// `/etc/hosts` of a container without a network: the image's (or the localhost block), plus
/// a `127.0.1.1` line for the hostname if none names it.
pub fn hosts_file(current: &str, hostname: &str) -> String {
    let mut out = if current.trim().is_empty() {
        LOCALHOST.to_string()
    } else {
        current.to_string()
    };
    let named = out
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .any(|l| l.split_whitespace().skip(1).any(|n| n == hostname));
    if !named {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    out
}

/// `/etc/hosts` of a container on a network, laid out as Docker does (the image's file is
/// replaced): the localhost block, the `extra` lines (links, `--add-host`), then the
/// container's own address with its hostname.
pub fn networked_hosts_file(hostname: &str, ip: Ipv4Addr, extra: &[String]) -> String {
    let mut out = LOCALHOST.to_string();
    for line in extra {
        out.push_str(line.trim_end_matches('\n'));
        out.push('\n');
    }
    if !hostname.is_empty() {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

/// Write `content` to `path` on the container's disk. A symlink there (the image's
/// `/etc/resolv.conf` often is one) is replaced, not followed: followed, it would point into
/// the agent's own tree.
pub fn write(path: &Path, content: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(path)?;
    }
    std::fs::write(path, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_without_network() {
        let d = hosts_file("", "abc");
        assert!(d.starts_with("127.0.0.1\tlocalhost\n") && d.ends_with("127.0.1.1\tabc\n"));
        assert_eq!(hosts_file("1.2.3.4 abc\n", "abc"), "1.2.3.4 abc\n");
        assert_eq!(
            hosts_file("# abc\n127.0.0.1 localhost", "abc"),
            "# abc\n127.0.0.1 localhost\n127.0.1.1\tabc\n"
        );
    }

    #[test]
    fn hosts_on_a_network() {
        let h = networked_hosts_file(
            "web",
            Ipv4Addr::new(172, 16, 0, 5),
            &["172.16.0.6\tdb mysql".into(), "10.0.0.9\tapi\n".into()],
        );
        assert_eq!(
            h,
            format!("{LOCALHOST}172.16.0.6\tdb mysql\n10.0.0.9\tapi\n172.16.0.5\tweb\n")
        );
        assert!(!h.contains("127.0.1.1"));
        assert_eq!(
            networked_hosts_file("", Ipv4Addr::new(10, 0, 0, 2), &[]),
            LOCALHOST
        );
    }

    #[test]
    fn write_replaces_a_symlink() {
        let dir = std::env::temp_dir().join(format!("etc-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let outside = dir.join("outside");
        std::fs::write(&outside, "keep").unwrap();
        let link = dir.join("etc/resolv.conf");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        write(&link, "nameserver 10.0.0.1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(&link).unwrap(),
            "nameserver 10.0.0.1\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
