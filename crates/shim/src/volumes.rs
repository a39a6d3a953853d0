//! A container's volumes on the host side (DESIGN decision 10): the spec's volumes checked, put
//! behind the VM's volume slots (`vm::volume`) the way each boot needs them, and described to
//! the agent, which mounts them.
//!
//! How a disk is reached depends on the boot: a cold boot's QEMU opens it by path before it
//! chroots; a restore's QEMU is chrooted when its migration reactivates the disk, so it gets
//! descriptors on its command line; a claimed standby's QEMU gets one over QMP. Each kind of
//! [`VolumeDisk`] has one match arm in each of [`cold`], [`for_restore`] and [`attach`].

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

use agent_proto::{GuestMsg, VolumeMount};
use anyhow::{bail, Context, Result};
use serde_json::json;
use vm::{Qmp, Volume, VolumeBacking, Volumes, VOLUME_SLOTS};

use crate::{Response, Spec, VolumeDisk, VolumeSpec};

// The layout's slots and serials are the ones the agent looks for.
const _: () = assert!(VOLUME_SLOTS == agent_proto::VOLUME_SLOTS as usize);

/// Refuse a spec whose volumes do not fit the layout or whose disks are not what they claim:
/// at most [`VOLUME_SLOTS`], each in its own slot, mounted at an absolute path other than `/`,
/// of a size in whole sectors (virtio-blk counts 512-byte sectors) that is the disk's own.
pub fn check(spec: &Spec) -> Result<()> {
    if spec.volumes.len() > VOLUME_SLOTS {
        bail!(
            "{} volumes: a VM has {VOLUME_SLOTS} volume slots",
            spec.volumes.len()
        );
    }
    let mut used = HashSet::new();
    for v in &spec.volumes {
        let m = &v.mount;
        if usize::from(m.slot) >= VOLUME_SLOTS || !used.insert(m.slot) {
            bail!("volume slot {} is out of range or used twice", m.slot);
        }
        if !m.target.starts_with('/') || Path::new(&m.target) == Path::new("/") {
            bail!(
                "volume slot {}: mount target {:?} must be an absolute path other than /",
                m.slot,
                m.target
            );
        }
        if m.size_bytes == 0 || m.size_bytes % 512 != 0 {
            bail!(
                "volume slot {}: size {} is not a positive multiple of 512 bytes",
                m.slot,
                m.size_bytes
            );
        }
        check_disk(v).with_context(|| format!("volume slot {}", m.slot))?;
    }
    Ok(())
}

fn check_disk(v: &VolumeSpec) -> Result<()> {
    match &v.disk {
        VolumeDisk::Local { path } => {
            if !path.is_absolute() {
                bail!("path {} is not absolute", path.display());
            }
            let md = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
            if !md.is_file() {
                bail!("{} is not a regular file", path.display());
            }
            if md.len() != v.mount.size_bytes {
                bail!(
                    "{} has {} bytes, the spec says {}",
                    path.display(),
                    md.len(),
                    v.mount.size_bytes
                );
            }
            Ok(())
        }
    }
}

/// What the agent mounts at `Start`.
pub fn mounts(spec: &Spec) -> Vec<VolumeMount> {
    spec.volumes.iter().map(|v| v.mount.clone()).collect()
}

/// `backing` behind the slot of `v`.
fn place(volumes: &mut Volumes, v: &VolumeSpec, backing: VolumeBacking) {
    volumes[usize::from(v.mount.slot)] = Some(Volume {
        backing,
        size: v.mount.size_bytes,
    });
}

/// The volumes of a cold boot: QEMU opens them by path as it starts.
pub fn cold(spec: &Spec) -> Volumes {
    let mut volumes = Volumes::default();
    for v in &spec.volumes {
        let backing = match &v.disk {
            VolumeDisk::Local { path } => VolumeBacking::File(path.clone()),
        };
        place(&mut volumes, v, backing);
    }
    volumes
}

/// The volumes of a restore, and the open files behind their descriptors: keep them until
/// QEMU has been spawned (it inherits the descriptors).
pub fn for_restore(spec: &Spec) -> Result<(Volumes, Vec<File>)> {
    let mut volumes = Volumes::default();
    let mut files = Vec::new();
    for v in &spec.volumes {
        let backing = match &v.disk {
            VolumeDisk::Local { path } => {
                let (ro, rw) = crate::daemon::open_for_fdset(path, "a volume")?;
                let fds = vec![ro.as_raw_fd(), rw.as_raw_fd()];
                files.extend([ro, rw]);
                VolumeBacking::FdSet(fds)
            }
        };
        place(&mut volumes, v, backing);
    }
    Ok((volumes, files))
}

/// Put the volumes of `spec` behind the slots of the claimed standby whose QMP socket is
/// `qmp_sock` (each slot holds the placeholder until then).
pub fn attach(qmp_sock: &Path, spec: &Spec) -> Result<()> {
    if spec.volumes.is_empty() {
        return Ok(());
    }
    let mut qmp = Qmp::connect(qmp_sock, Duration::from_secs(5))?;
    for v in &spec.volumes {
        let slot = usize::from(v.mount.slot);
        let backing = match &v.disk {
            VolumeDisk::Local { path } => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                qmp.execute_with_fd(
                    "add-fd",
                    json!({ "fdset-id": vm::volume::volume_fdset(slot) }),
                    f.as_fd(),
                )?;
                VolumeBacking::FdSet(Vec::new())
            }
        };
        let volume = Volume {
            backing,
            size: v.mount.size_bytes,
        };
        vm::volume::attach(&mut qmp, slot, &volume)
            .with_context(|| format!("attaching volume slot {slot}"))?;
    }
    Ok(())
}

/// The reply to a `Freeze` or `Thaw` the agent answered with `answer`.
pub fn done(answer: Result<GuestMsg, String>) -> Response {
    match answer {
        Ok(GuestMsg::Done { .. }) => Response::ok(),
        Ok(GuestMsg::Error { message, .. }) => Response::err(message),
        Ok(other) => Response::err(format!("unexpected reply {other:?}")),
        Err(e) => Response::err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(volumes: serde_json::Value) -> Result<Spec> {
        Ok(serde_json::from_value(json!({
            "id": "x", "kernel": "/k", "initrd": "/i", "root_disk": "/r",
            "process": {"args": ["true"]}, "volumes": volumes,
        }))?)
    }

    fn volume(slot: u8, path: &Path, target: &str, size: u64) -> serde_json::Value {
        json!({ "disk": {"driver": "local", "path": path},
                "mount": {"slot": slot, "target": target, "size_bytes": size} })
    }

    #[test]
    fn serials_agree_with_the_agent() {
        for slot in 0..VOLUME_SLOTS {
            assert_eq!(
                vm::volume_serial(slot),
                agent_proto::volume_serial(slot as u8)
            );
        }
    }

    #[test]
    fn checks_slots_targets_and_disks() {
        let dir = std::env::temp_dir().join(format!("shim-volumes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("v.img");
        File::create(&img).unwrap().set_len(1 << 20).unwrap();
        let ok = |vs: serde_json::Value| check(&spec_with(vs).unwrap());
        assert!(ok(json!([volume(0, &img, "/data", 1 << 20)])).is_ok());
        let bad = [
            json!([volume(4, &img, "/data", 1 << 20)]),
            json!([
                volume(1, &img, "/a", 1 << 20),
                volume(1, &img, "/b", 1 << 20)
            ]),
            json!([volume(0, &img, "data", 1 << 20)]),
            json!([volume(0, &img, "/", 1 << 20)]),
            json!([volume(0, &img, "/data", 2 << 20)]),
            json!([volume(0, &img, "/data", 0)]),
            json!([volume(0, Path::new("v.img"), "/data", 1 << 20)]),
            json!([volume(0, &dir, "/data", 1 << 20)]),
            json!([volume(0, &dir.join("missing"), "/data", 1 << 20)]),
            json!((0..5)
                .map(|s| volume(s, &img, &format!("/v{s}"), 1 << 20))
                .collect::<Vec<_>>()),
        ];
        for (i, vs) in bad.into_iter().enumerate() {
            assert!(ok(vs).is_err(), "bad[{i}]");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_boot_gets_the_disk_its_way() {
        let dir = std::env::temp_dir().join(format!("shim-volboot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("v.img");
        File::create(&img).unwrap().set_len(1 << 20).unwrap();
        let spec = spec_with(json!([volume(2, &img, "/data", 1 << 20)])).unwrap();
        let cold = cold(&spec);
        assert_eq!(
            cold[2],
            Some(Volume {
                backing: VolumeBacking::File(img.clone()),
                size: 1 << 20
            })
        );
        assert!(cold[0].is_none() && cold[1].is_none() && cold[3].is_none());
        let (restore, files) = for_restore(&spec).unwrap();
        let fds = restore[2].as_ref().unwrap().backing.fds().to_vec();
        assert_eq!(fds, files.iter().map(|f| f.as_raw_fd()).collect::<Vec<_>>());
        assert_eq!(mounts(&spec)[0].target, "/data");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn freeze_replies() {
        assert!(done(Ok(GuestMsg::Done { req_id: 1 })).ok);
        let r = done(Ok(GuestMsg::Error {
            req_id: 1,
            message: "no such volume".into(),
        }));
        assert_eq!(r.error.as_deref(), Some("no such volume"));
        assert!(!done(Err("container is not running".into())).ok);
    }
}
