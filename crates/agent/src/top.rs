//! `top` and `stats` from the agent's /proc (the root PID namespace's view). The container is
//! every process in the main process's PID namespace; PIDs shown are guest-global.

use std::collections::HashMap;

use crate::user;

pub const TITLES: &[&str] = &["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];
const HZ: u64 = 100;

/// The fields of /proc/PID/stat we use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcStat {
    pub comm: String,
    pub ppid: i32,
    pub tty_nr: u32,
    pub utime: u64,
    pub stime: u64,
    pub starttime: u64,
}

pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // f[0] is field 3 (state).
    Some(ProcStat {
        comm,
        ppid: f.get(1)?.parse().ok()?,
        tty_nr: f.get(4)?.parse::<i64>().ok()? as u32,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
        starttime: f.get(19)?.parse().ok()?,
    })
}

/// "pts/N", "ttySN" or "?" for a tty_nr.
pub fn tty_name(tty_nr: u32) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        0 => "?".into(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor >= 64 => format!("ttyS{}", minor - 64),
        4 => format!("tty{minor}"),
        _ => "?".into(),
    }
}

/// "HH:MM:SS" for a number of seconds (days wrap into hours, like ps).
pub fn hms(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// "HH:MM" (UTC) of an epoch time.
pub fn hhmm(epoch: u64) -> String {
    let d = epoch % 86400;
    format!("{:02}:{:02}", d / 3600, (d / 60) % 60)
}

fn pid_ns(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

fn btime() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// PIDs (guest-global) of the container: processes in `main_pid`'s PID namespace.
pub fn container_pids(main_pid: i32) -> Vec<String> {
    let Some(ns) = pid_ns(&main_pid.to_string()) else {
        return Vec::new();
    };
    let mut pids: Vec<(i32, String)> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter_map(|n| n.parse::<i32>().ok().map(|p| (p, n)))
                .filter(|(_, n)| pid_ns(n).as_ref() == Some(&ns))
                .collect()
        })
        .unwrap_or_default();
    pids.sort();
    pids.into_iter().map(|(_, n)| n).collect()
}

/// Rows for `top` (ps -ef style).
pub fn top(main_pid: i32) -> (Vec<String>, Vec<Vec<String>>) {
    let root = std::path::PathBuf::from(format!("/proc/{main_pid}/root"));
    let passwd =
        user::parse_passwd(&std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default());
    let names: HashMap<u32, String> = passwd.into_iter().map(|p| (p.uid, p.name)).collect();
    let boot = btime();
    let mut rows = Vec::new();
    for pid in container_pids(main_pid) {
        let Some(st) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        else {
            continue;
        };
        let uid: u32 = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = if cmdline.is_empty() {
            format!("[{}]", st.comm)
        } else {
            cmdline
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        rows.push(vec![
            names.get(&uid).cloned().unwrap_or_else(|| uid.to_string()),
            pid,
            st.ppid.to_string(),
            "0".into(),
            hhmm(boot + st.starttime / HZ),
            tty_name(st.tty_nr),
            hms((st.utime + st.stime) / HZ),
            cmd,
        ]);
    }
    (TITLES.iter().map(|s| s.to_string()).collect(), rows)
}

/// Memory in bytes: (usage = MemTotal - MemAvailable, limit = MemTotal).
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = get("MemTotal:");
    (total.saturating_sub(get("MemAvailable:")), total)
}

/// CPU nanoseconds from the "cpu" line of /proc/stat: (busy, total).
pub fn parse_cpu(text: &str) -> (u64, u64) {
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let ns = 1_000_000_000 / HZ;
    ((total - idle) * ns, total * ns)
}

pub struct Stats {
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub cpu_total_ns: u64,
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    pub pids: u64,
}

pub fn stats(main_pid: Option<i32>) -> Stats {
    let (memory_usage, memory_limit) =
        parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    let (cpu_total_ns, system_cpu_ns) =
        parse_cpu(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
    // SAFETY: sysconf has no side effects.
    let online_cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32;
    let pids = main_pid
        .map(|p| container_pids(p).len() as u64)
        .unwrap_or(0);
    Stats {
        memory_usage,
        memory_limit,
        cpu_total_ns,
        system_cpu_ns,
        online_cpus,
        pids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let t = "42 (my (odd) cmd) S 1 42 42 34816 42 4194560 100 0 0 0 150 50 0 0 20 0 1 0 12345 1000 10 18446744073709551615";
        let s = parse_stat(t).unwrap();
        assert_eq!(
            s,
            ProcStat {
                comm: "my (odd) cmd".into(),
                ppid: 1,
                tty_nr: 34816,
                utime: 150,
                stime: 50,
                starttime: 12345
            }
        );
        assert_eq!(tty_name(34816), "pts/0");
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name((4 << 8) | 64), "ttyS0");
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn times() {
        assert_eq!(hms(0), "00:00:00");
        assert_eq!(hms(3723), "01:02:03");
        assert_eq!(hhmm(86400 + 3600 * 13 + 60 * 7), "13:07");
    }

    #[test]
    fn meminfo_and_cpu() {
        assert_eq!(
            parse_meminfo("MemTotal:  1000 kB\nMemFree: 10 kB\nMemAvailable:  600 kB\n"),
            (400 * 1024, 1000 * 1024)
        );
        let (busy, total) = parse_cpu("cpu  10 0 5 80 5 0 0 0 0 0\ncpu0 1 2 3\n");
        assert_eq!((busy, total), (15 * 10_000_000, 100 * 10_000_000));
        assert_eq!(parse_cpu(""), (0, 0));
    }
}
