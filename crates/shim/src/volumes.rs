//! A container's volumes on the host side (DESIGN decision 10): the spec's volumes checked, put
//! behind the VM's volume slots (`vm::volume`) the way each boot needs them, and described to
//! the agent, which mounts them.
//!
//! How a disk is reached depends on the boot: a cold boot's QEMU opens it by path before it
//! chroots; a restore's QEMU is chrooted when its migration reactivates the disk, so it gets
//! descriptors on its command line; a claimed standby's QEMU gets one over QMP. Each kind of
//! [`VolumeDisk`] has one match arm in each of [`cold`], [`for_restore`] and [`attach`].
//!
//! An RBD image is opened by QEMU itself, over the network, in every boot (no descriptors: the
//! incoming migration's reactivation of a restore reopens nothing). Its Ceph key reaches QEMU
//! as a `secret` object: on a command line (cold boot, restore) from a file of the VM's
//! directory ([`key_file`], mode 0600, root's), which QEMU reads as it starts and which goes
//! once QEMU is up ([`Held`]); in a claim, over QMP. Never as `data=` on a command line, which
//! any local user can read in `/proc/PID/cmdline`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_proto::{GuestMsg, VolumeMount};
use anyhow::{bail, Context, Result};
use serde_json::json;
use vm::{Qmp, Rbd, RbdKey, Volume, VolumeBacking, Volumes, VOLUME_SLOTS};

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
        VolumeDisk::Rbd {
            pool,
            image,
            user,
            key,
            monitors,
        } => {
            for (what, name) in [("pool", pool), ("image", image), ("user", user)] {
                check_ceph_name(what, name)?;
            }
            // Never in an error message: it is the user's secret.
            if key.is_empty()
                || key.len() > 256
                || key.len() % 4 != 0
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
            {
                bail!("the rbd key is not base64");
            }
            if monitors.is_empty() || monitors.len() > 16 {
                bail!("an rbd volume needs 1 to 16 monitors");
            }
            for m in monitors {
                monitor(m)?;
            }
            // The image's size is QEMU's to check (`vm::volume::announce_sizes`): the shim has
            // no librbd.
            Ok(())
        }
    }
}

/// A pool, image or user name: what Ceph allows is wider, but a narrow set keeps names out of
/// every parser they could meet (rbd's `pool/image@snap`, QEMU's and Ceph's option strings).
fn check_ceph_name(what: &str, name: &str) -> Result<()> {
    let ok = (1..=128).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        bail!("rbd {what} {name:?}: 1 to 128 of A-Z a-z 0-9 . _ -, not starting with . or -");
    }
    Ok(())
}

/// A monitor given as `ip:port` (`[ipv6]:port`): an address, since a chrooted QEMU resolves no
/// names (no /etc/hosts, /etc/resolv.conf or NSS modules in its directory).
fn monitor(m: &str) -> Result<vm::Monitor> {
    let addr: SocketAddr = m.parse().map_err(|_| {
        anyhow::anyhow!("rbd monitor {m:?} is not an ip:port ([ipv6]:port) address")
    })?;
    if addr.port() == 0 {
        bail!("rbd monitor {m:?} has port 0");
    }
    Ok(vm::Monitor {
        host: addr.ip().to_string(),
        port: addr.port(),
    })
}

/// The RBD image of `disk`, its key from `key`.
fn rbd(disk: &VolumeDisk, key: RbdKey) -> Result<VolumeBacking> {
    let VolumeDisk::Rbd {
        pool,
        image,
        user,
        monitors,
        ..
    } = disk
    else {
        bail!("not an rbd volume");
    };
    Ok(VolumeBacking::Rbd(Rbd {
        pool: pool.clone(),
        image: image.clone(),
        user: user.clone(),
        monitors: monitors.iter().map(|m| monitor(m)).collect::<Result<_>>()?,
        key,
    }))
}

/// The file of the VM in `dir` that holds the Ceph key of slot `slot`'s RBD image while QEMU
/// starts.
pub fn key_file(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("vol{slot}.key"))
}

/// Write `key` to [`key_file`]: created afresh, mode 0600, root's (QEMU reads it while it is
/// still root; once it has dropped to its user it could not, and it is gone by then).
fn write_key(held: &mut Held, dir: &Path, slot: usize, key: &str) -> Result<PathBuf> {
    let path = key_file(dir, slot);
    let _ = std::fs::remove_file(&path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    held.keys.push(path.clone());
    f.write_all(key.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What a boot's volumes need until QEMU is up: the descriptors it inherits, the key files it
/// reads as it starts. Dropping it closes the one and removes the other.
#[derive(Default)]
pub struct Held {
    files: Vec<File>,
    keys: Vec<PathBuf>,
}

impl Held {
    /// The descriptors held, in the order they were opened.
    #[cfg(test)]
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        self.files.iter().map(|f| f.as_raw_fd()).collect()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for k in &self.keys {
            let _ = std::fs::remove_file(k);
        }
    }
}

/// Whether any volume of `spec` is an RBD image.
pub fn has_rbd(spec: &Spec) -> bool {
    spec.volumes
        .iter()
        .any(|v| matches!(v.disk, VolumeDisk::Rbd { .. }))
}

/// Refuse, before anything of a standby VM in `dir` is given away (and before [`attach`]), a
/// claim whose RBD volumes it could not open: its QEMU needs the rbd module staged (`vm::volume::stage_rbd_module`).
pub fn check_claimable(dir: &Path, spec: &Spec) -> Result<()> {
    if has_rbd(spec) && !vm::volume::rbd_module_staged(dir) {
        bail!("this standby VM cannot open rbd volumes (QEMU's rbd module, from qemu-block-extra, was not there when it started)");
    }
    Ok(())
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

/// The volumes of a cold boot of the VM in `dir`: QEMU opens them by path as it starts (RBD
/// images over the network, with the key from a [`key_file`]). Keep the [`Held`] until QEMU is
/// up.
pub fn cold(spec: &Spec, dir: &Path) -> Result<(Volumes, Held)> {
    let mut volumes = Volumes::default();
    let mut held = Held::default();
    for v in &spec.volumes {
        let backing = match &v.disk {
            VolumeDisk::Local { path } => VolumeBacking::File(path.clone()),
            VolumeDisk::Rbd { key, .. } => {
                let file = write_key(&mut held, dir, usize::from(v.mount.slot), key)?;
                rbd(&v.disk, RbdKey::File(file))?
            }
        };
        place(&mut volumes, v, backing);
    }
    Ok((volumes, held))
}

/// The volumes of a restore of the VM in `dir`, with the open files behind their descriptors
/// and the key files: keep the [`Held`] until QEMU is up (it inherits the descriptors and reads
/// the keys as it starts).
pub fn for_restore(spec: &Spec, dir: &Path) -> Result<(Volumes, Held)> {
    let mut volumes = Volumes::default();
    let mut held = Held::default();
    for v in &spec.volumes {
        let backing = match &v.disk {
            VolumeDisk::Local { path } => {
                let (ro, rw) = crate::daemon::open_for_fdset(path, "a volume")?;
                let fds = vec![ro.as_raw_fd(), rw.as_raw_fd()];
                held.files.extend([ro, rw]);
                VolumeBacking::FdSet(fds)
            }
            // QEMU opens the image as it starts, inactive (`-incoming`), and activates it when
            // the migration completes: librbd's image stays open, nothing is reopened by path
            // (verified: the guest reads and writes it after the restore).
            VolumeDisk::Rbd { key, .. } => {
                let file = write_key(&mut held, dir, usize::from(v.mount.slot), key)?;
                rbd(&v.disk, RbdKey::File(file))?
            }
        };
        place(&mut volumes, v, backing);
    }
    Ok((volumes, held))
}

/// Put the volumes of `spec` behind the slots of the claimed standby in `dir` (each slot holds
/// the placeholder until then).
pub fn attach(dir: &Path, spec: &Spec) -> Result<()> {
    if spec.volumes.is_empty() {
        return Ok(());
    }
    // An RBD image is opened in `blockdev-add`: a round trip to a monitor and cephx, well
    // under a second when the cluster is up.
    let mut qmp = Qmp::connect(&dir.join(vm::QMP_SOCK), Duration::from_secs(30))?;
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
            VolumeDisk::Rbd { key, .. } => rbd(&v.disk, RbdKey::Inline(key.clone()))?,
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
        let (cold, _) = cold(&spec, &dir).unwrap();
        assert_eq!(
            cold[2],
            Some(Volume {
                backing: VolumeBacking::File(img.clone()),
                size: 1 << 20
            })
        );
        assert!(cold[0].is_none() && cold[1].is_none() && cold[3].is_none());
        let (restore, held) = for_restore(&spec, &dir).unwrap();
        let fds = restore[2].as_ref().unwrap().backing.fds().to_vec();
        assert_eq!(fds, held.fds());
        assert_eq!(mounts(&spec)[0].target, "/data");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const KEY: &str = "AQBn8BFrhp2FLxAAdOWjxnZsOrTNFOKgjw03fw==";

    fn rbd_volume(slot: u8, over: serde_json::Value) -> serde_json::Value {
        let mut disk = json!({"driver": "rbd", "pool": "rbd", "image": "vol-1", "user": "hyper",
                              "key": KEY, "monitors": ["192.0.2.2:3300", "[2001:db8::2]:3300"]});
        for (k, v) in over.as_object().unwrap() {
            disk[k] = v.clone();
        }
        json!({ "disk": disk, "mount": {"slot": slot, "target": "/data", "size_bytes": 64 << 20} })
    }

    #[test]
    fn checks_rbd_names_keys_and_monitors() {
        let ok = |over: serde_json::Value| check(&spec_with(json!([rbd_volume(0, over)])).unwrap());
        assert!(ok(json!({})).is_ok());
        assert!(ok(json!({"image": "a_b-c.d", "user": "client-1"})).is_ok());
        let bad = [
            json!({"pool": ""}),
            json!({"image": "a/b"}),
            json!({"image": "a@snap"}),
            json!({"image": "a,b"}),
            json!({"image": "-a"}),
            json!({"image": ".."}),
            json!({"user": "hyper,id=x"}),
            json!({"user": "a b"}),
            json!({"pool": "x".repeat(129)}),
            json!({"key": ""}),
            json!({"key": "not base64!"}),
            json!({"key": "AQB"}),
            json!({"monitors": []}),
            json!({"monitors": ["mon.example:3300"]}),
            json!({"monitors": ["192.0.2.2"]}),
            json!({"monitors": ["192.0.2.2:0"]}),
            json!({"monitors": ["2001:db8::2:3300"]}),
            json!({"monitors": ["192.0.2.2:3300,192.0.2.3:3300"]}),
        ];
        for (i, over) in bad.into_iter().enumerate() {
            let r = ok(over.clone());
            assert!(r.is_err(), "bad[{i}] {over}");
            assert!(!format!("{:#}", r.unwrap_err()).contains(KEY), "bad[{i}]");
        }
        let r = ok(json!({"key": format!("{KEY}!")}));
        assert!(!format!("{:#}", r.unwrap_err()).contains(KEY));
    }

    #[test]
    fn rbd_keys_are_files_on_command_lines_and_inline_in_claims() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("shim-volrbd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = spec_with(json!([rbd_volume(3, json!({}))])).unwrap();
        let key = key_file(&dir, 3);
        std::fs::write(&key, "stale").unwrap();
        for boot in ["cold", "restore"] {
            let (volumes, held) = if boot == "cold" {
                cold(&spec, &dir).unwrap()
            } else {
                for_restore(&spec, &dir).unwrap()
            };
            assert!(held.fds().is_empty(), "{boot}: no descriptors for rbd");
            let v = volumes[3].as_ref().unwrap();
            assert_eq!(v.size, 64 << 20);
            let VolumeBacking::Rbd(r) = &v.backing else {
                panic!("{boot}: {:?}", v.backing)
            };
            assert_eq!(
                (r.pool.as_str(), r.image.as_str(), r.user.as_str()),
                ("rbd", "vol-1", "hyper")
            );
            assert_eq!(
                r.monitors,
                [
                    vm::Monitor {
                        host: "192.0.2.2".into(),
                        port: 3300
                    },
                    vm::Monitor {
                        host: "2001:db8::2".into(),
                        port: 3300
                    }
                ]
            );
            assert_eq!(r.key, RbdKey::File(key.clone()));
            // The key, as it is (no newline), readable by root only; the debug form hides it.
            assert_eq!(std::fs::read_to_string(&key).unwrap(), KEY);
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{boot}");
            assert!(!format!("{volumes:?}").contains(KEY));
            drop(held);
            assert!(!key.exists(), "{boot}: the key file outlived the boot");
        }
        let inline = rbd(&spec.volumes[0].disk, RbdKey::Inline(KEY.into())).unwrap();
        let VolumeBacking::Rbd(r) = &inline else {
            panic!()
        };
        assert_eq!(r.key, RbdKey::Inline(KEY.into()));
        assert!(!format!("{inline:?}").contains(KEY));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn standbys_without_the_rbd_module_refuse_rbd_claims() {
        let dir = std::env::temp_dir().join(format!("shim-volclaim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rbd = spec_with(json!([rbd_volume(0, json!({}))])).unwrap();
        let none = spec_with(json!([])).unwrap();
        assert!(check_claimable(&dir, &none).is_ok());
        assert!(check_claimable(&dir, &rbd).is_err());
        std::fs::create_dir_all(dir.join(vm::volume::MODULE_DIR)).unwrap();
        std::fs::write(dir.join(vm::volume::MODULE_DIR).join("block-rbd.so"), "").unwrap();
        assert!(check_claimable(&dir, &rbd).is_ok());
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
