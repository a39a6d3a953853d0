//! Docker's tmpfs mounts: `HostConfig.Tmpfs` (`--tmpfs /path[:options]`) and `HostConfig.Mounts`
//! of type `tmpfs`. They live in the guest's memory (the agent mounts them), so a size beyond
//! the container's memory is refused. Defaults as dockerd's: `noexec,nosuid,nodev`, mode 1777.

use agent_proto::TmpfsMount;

use crate::model::HostConfig;
use crate::volumes::request::check_destination;
use crate::{Result, RuntimeError};

/// Every tmpfs the container asks for, checked, parents before children.
pub fn plan(hc: &HostConfig, memory_mib: u64) -> Result<Vec<TmpfsMount>> {
    let mut out: Vec<TmpfsMount> = Vec::new();
    let from_flags = hc
        .tmpfs
        .iter()
        .map(|(target, options)| from_options(target, options, memory_mib));
    let from_mounts = hc
        .mounts
        .iter()
        .filter(|m| m.kind == "tmpfs")
        .map(|m| from_mount(m, memory_mib));
    for m in from_flags.chain(from_mounts) {
        let m = m?;
        if out.iter().any(|o| o.target == m.target) {
            return Err(RuntimeError::Invalid(format!(
                "Duplicate mount point: {}",
                m.target
            )));
        }
        out.push(m);
    }
    out.sort_by_key(|m| m.target.matches('/').count());
    Ok(out)
}

fn defaults(target: &str) -> Result<TmpfsMount> {
    Ok(TmpfsMount {
        target: check_destination(target)?,
        size_bytes: 0,
        mode: 0o1777,
        read_only: false,
        noexec: true,
        nosuid: true,
        nodev: true,
    })
}

/// `--tmpfs /path:size=64m,mode=1770,exec`.
fn from_options(target: &str, options: &str, memory_mib: u64) -> Result<TmpfsMount> {
    let mut m = defaults(target)?;
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        match (key, value) {
            ("size", v) => m.size_bytes = size(v, target)?,
            ("mode", v) => {
                m.mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o7777)
                    .ok_or_else(|| invalid(target, &format!("mode={v} is not an octal mode")))?
            }
            ("ro", "") => m.read_only = true,
            ("rw", "") => m.read_only = false,
            ("exec", "") => m.noexec = false,
            ("noexec", "") => m.noexec = true,
            ("suid", "") => m.nosuid = false,
            ("nosuid", "") => m.nosuid = true,
            ("dev", "") => m.nodev = false,
            ("nodev", "") => m.nodev = true,
            _ => {
                return Err(RuntimeError::Unsupported(format!(
                    "tmpfs option {option:?} on {target} is not supported: use size, mode, ro, rw, exec, noexec, suid, nosuid, dev or nodev"
                )))
            }
        }
    }
    check_size(&m, memory_mib)?;
    Ok(m)
}

/// `--mount type=tmpfs,destination=/path,tmpfs-size=...,tmpfs-mode=...`.
fn from_mount(spec: &crate::volumes::request::MountSpec, memory_mib: u64) -> Result<TmpfsMount> {
    if !spec.source.is_empty() {
        return Err(invalid(
            &spec.target,
            "a tmpfs mount has no source: leave it out",
        ));
    }
    let mut m = defaults(&spec.target)?;
    m.read_only = spec.read_only;
    if let Some(o) = &spec.tmpfs_options {
        m.size_bytes = u64::try_from(o.size_bytes)
            .map_err(|_| invalid(&spec.target, "a negative tmpfs-size"))?;
        if o.mode != 0 {
            if o.mode > 0o7777 {
                return Err(invalid(&spec.target, "tmpfs-mode has bits beyond 07777"));
            }
            m.mode = o.mode;
        }
    }
    check_size(&m, memory_mib)?;
    Ok(m)
}

/// `64m`, `1g`, `512k` or bytes, as Docker's `size=` takes it.
fn size(text: &str, target: &str) -> Result<u64> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.trim_end_matches('b').char_indices().last() {
        Some((i, c @ ('k' | 'm' | 'g'))) => (&lower[..i], c),
        _ => (lower.trim_end_matches('b'), ' '),
    };
    let shift = match unit {
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| invalid(target, &format!("size={text} is not a size (e.g. 64m)")))
}

fn check_size(m: &TmpfsMount, memory_mib: u64) -> Result<()> {
    if m.size_bytes > memory_mib << 20 {
        return Err(RuntimeError::Invalid(format!(
            "tmpfs {} of {} MiB does not fit in the container's memory ({memory_mib} MiB): choose a smaller size, or a larger --size",
            m.target,
            m.size_bytes >> 20
        )));
    }
    Ok(())
}

fn invalid(target: &str, why: &str) -> RuntimeError {
    RuntimeError::Invalid(format!("invalid tmpfs mount {target}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::request::{MountSpec, TmpfsOptions};

    fn hc(tmpfs: &[(&str, &str)], mounts: Vec<MountSpec>) -> HostConfig {
        HostConfig {
            tmpfs: tmpfs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            mounts,
            ..Default::default()
        }
    }

    #[test]
    fn options_as_docker_takes_them() {
        let got = plan(
            &hc(
                &[("/run/x", "size=64m,mode=1770,exec"), ("/run", "")],
                vec![],
            ),
            512,
        )
        .unwrap();
        assert_eq!(got[0].target, "/run");
        assert!(got[0].noexec && got[0].nosuid && got[0].nodev && got[0].mode == 0o1777);
        assert_eq!(got[1].size_bytes, 64 << 20);
        assert_eq!(got[1].mode, 0o1770);
        assert!(!got[1].noexec && got[1].nosuid);
        let mount = MountSpec {
            kind: "tmpfs".into(),
            target: "/t".into(),
            read_only: true,
            tmpfs_options: Some(TmpfsOptions {
                size_bytes: 1 << 20,
                mode: 0o700,
            }),
            ..Default::default()
        };
        let got = plan(&hc(&[], vec![mount]), 512).unwrap();
        assert!(got[0].read_only && got[0].mode == 0o700 && got[0].size_bytes == 1 << 20);
    }

    #[test]
    fn bad_input_is_refused_naming_it() {
        for (tmpfs, memory, says) in [
            (("/t", "size=lots"), 512, "size=lots is not a size"),
            (("/t", "mode=999"), 512, "not an octal mode"),
            (
                ("/t", "uid=1000"),
                512,
                "\"uid=1000\" on /t is not supported",
            ),
            (
                ("/t", "size=1g"),
                512,
                "does not fit in the container's memory (512 MiB)",
            ),
            (("t", ""), 512, "must be absolute"),
            (("/", ""), 512, "cannot replace the container's root"),
        ] {
            let e = plan(&hc(&[tmpfs], vec![]), memory).unwrap_err().to_string();
            assert!(e.contains(says), "{tmpfs:?}: {e}");
        }
        let twice = MountSpec {
            kind: "tmpfs".into(),
            target: "/t/".into(),
            ..Default::default()
        };
        let e = plan(&hc(&[("/t", "")], vec![twice]), 512).unwrap_err();
        assert!(e.to_string().contains("Duplicate mount point: /t"), "{e}");
    }
}
