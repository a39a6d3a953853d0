//! Volume slots (DESIGN decisions 8 and 10): [`VOLUME_SLOTS`] virtio-blk disks in every VM's
//! fixed device layout, right after the root disk, whether or not the container has volumes, so
//! that a template's device state fits every container of its size and a standby can take any
//! container's volumes.
//!
//! Slot `N` is a `raw` block node named [`slot_node`]`(N)` under a `virtio-blk-device` with the
//! serial [`volume_serial`]`(N)`: the agent finds a volume by serial (`/sys/block/vd*/serial`),
//! never by device name, which depends on probe order. The raw node's `file` child is the
//! volume's disk ([`VolumeBacking::node`]) or, in a slot without a volume (every slot of a
//! template or a standby), a placeholder that reads as [`EMPTY_SLOT_BYTES`] of zeros. A claim
//! swaps that child for the container's disk ([`attach`]); the placeholder, defined inline, goes
//! with its last parent (no `blockdev-del`).
//!
//! Ceph RBD ([`VolumeBacking::Rbd`]): QEMU opens the image itself with its `rbd` driver, as a
//! Ceph user whose key it holds in a `secret` object, reaching the monitors by address; it reads
//! no `ceph.conf` (see [`crate::Qemu`]'s `CEPH_CONF`) and stays chrooted, unprivileged and under
//! its seccomp policy. librados needs no file once it runs (verified under that confinement with
//! Ceph 16.2 and QEMU 7.2: connections to monitors and OSDs, cephx, OSD restarts and
//! reconnections all work after the chroot), so nothing is added to the VM's directory for it
//! but, in a standby, the driver's module (see [`stage_rbd_module`]).
//!
//! Capacity: a guest restored from a template, or claimed from a standby, probed the slot's
//! placeholder at its boot and keeps that capacity until QEMU tells it the real one
//! ([`announce_sizes`], [`attach`]). It may also have cached the placeholder's zeros: the agent
//! drops the device's buffer cache before it mounts.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::{Qmp, QmpError, VmError};

/// Volume slots in the layout (`agent_proto::VOLUME_SLOTS`; the shim checks they agree).
pub const VOLUME_SLOTS: usize = 4;

/// Capacity of a slot without a volume: small (nothing reads it but the guest's partition
/// probe at boot) and not zero (a disk of zero sectors is a special case in the guest's block
/// layer that a placeholder has no reason to hit).
pub const EMPTY_SLOT_BYTES: u64 = 1 << 20;

/// First QEMU fd set of the volume slots (slot `N` uses this + `N`): above the root disk's (1)
/// and a claim's (2, 3).
const FDSET_BASE: u32 = 10;

/// The virtio-blk serial of slot `slot` (`agent_proto::volume_serial`; the shim checks they
/// agree).
pub fn volume_serial(slot: usize) -> String {
    format!("hyper-vol{slot}")
}

/// The block node the slot's device reads through (a `raw` node over the disk or placeholder).
pub fn slot_node(slot: usize) -> String {
    format!("vol{slot}")
}

/// The node of the volume's disk under [`slot_node`].
pub fn disk_node(slot: usize) -> String {
    format!("vol{slot}-disk")
}

/// The QEMU `secret` object holding the Ceph key of slot `slot`'s RBD image.
pub fn secret_id(slot: usize) -> String {
    format!("vol{slot}-key")
}

/// The QEMU fd set that holds slot `slot`'s descriptors (`/dev/fdset/N`).
pub fn volume_fdset(slot: usize) -> u32 {
    FDSET_BASE + slot as u32
}

/// What is behind a volume slot. QEMU opens it raw (the guest's ext4 is the format), with
/// `discard=unmap` (files deleted in the guest free the host's blocks) and write-back caching
/// (the guest's flushes reach the disk), and always writable: a read-only volume is a read-only
/// mount (the agent's), since the device's features are those the template's guest negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeBacking {
    /// A file QEMU opens by path as it starts, before it chroots: a cold boot.
    File(PathBuf),
    /// A file QEMU has as descriptors in the slot's fd set ([`volume_fdset`]), because it is
    /// chrooted when it opens the disk or reopens it: an incoming migration opens its disks
    /// inactive and reopens them read-write at the end (`fds`: inherited descriptors, read-only
    /// and read-write, put in the set on the command line), and a claim attaches the disk to a
    /// running QEMU (`fds` empty: the shim added the descriptor over QMP with `add-fd`).
    FdSet(Vec<i32>),
    /// A Ceph RBD image, opened (and reopened, and reconnected) by QEMU itself over the network:
    /// no descriptors in any boot.
    Rbd(Rbd),
}

/// A Ceph RBD image and how QEMU reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rbd {
    pub pool: String,
    pub image: String,
    /// The Ceph user (`client.<user>`) QEMU authenticates as, with cephx.
    pub user: String,
    /// The monitors, by address: a chrooted QEMU resolves no names.
    pub monitors: Vec<Monitor>,
    pub key: RbdKey,
}

/// A Ceph monitor's msgr2 (or v1) address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// An IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

/// Where QEMU gets the user's Ceph key (base64, as `ceph auth get-key` prints it). Never as
/// `data=` on a command line: any local user can read `/proc/PID/cmdline`.
#[derive(Clone, PartialEq, Eq)]
pub enum RbdKey {
    /// A file (mode 0600, root's) holding the key, which QEMU reads into a `secret` object as
    /// it starts, while it is still root and before it chroots (`-object secret,file=`): a cold
    /// boot or a restore. The caller may remove it once QEMU is up. (Verified with QEMU 7.2:
    /// secret objects are created with the early backends, before `-chroot` and `-runas` take
    /// effect; a key file outside the chroot, or root's own 0600 one inside, is read.)
    File(PathBuf),
    /// The key itself, for a QEMU that runs already (a claim): [`attach`] adds the `secret`
    /// object over QMP (`object-add`).
    Inline(String),
}

impl std::fmt::Debug for RbdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RbdKey::File(p) => f.debug_tuple("File").field(p).finish(),
            RbdKey::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

impl VolumeBacking {
    /// The disk as a QEMU block node (`-blockdev` / `blockdev-add` JSON) named
    /// [`disk_node`]`(slot)`: the one place that knows how each kind of backing is opened.
    ///
    /// An RBD node names the slot's `secret` object ([`secret_id`]), which must exist first.
    /// QEMU 7.2's `BlockdevOptionsRbd`: `pool`, `image`, `user`, `key-secret`,
    /// `auth-client-required` and `server` (a list of `{host, port}`, the port a string); no
    /// `conf`. `discard=unmap` passes the guest's discards on (librbd frees the objects), and
    /// the default cache mode (`cache.direct=off`) turns librbd's write-back cache on, which the
    /// guest's flushes flush.
    pub fn node(&self, slot: usize) -> Value {
        let filename = match self {
            VolumeBacking::File(path) => path.to_string_lossy().into_owned(),
            VolumeBacking::FdSet(_) => format!("/dev/fdset/{}", volume_fdset(slot)),
            VolumeBacking::Rbd(r) => {
                let servers: Vec<Value> = r
                    .monitors
                    .iter()
                    .map(|m| json!({ "host": m.host, "port": m.port.to_string() }))
                    .collect();
                return json!({
                    "driver": "rbd", "node-name": disk_node(slot),
                    "pool": r.pool, "image": r.image, "user": r.user,
                    "key-secret": secret_id(slot), "auth-client-required": ["cephx"],
                    "server": servers, "discard": "unmap",
                });
            }
        };
        json!({
            "driver": "file", "node-name": disk_node(slot), "filename": filename,
            "discard": "unmap",
        })
    }

    /// The descriptors QEMU must inherit for this backing.
    pub fn fds(&self) -> &[i32] {
        match self {
            VolumeBacking::FdSet(fds) => fds,
            VolumeBacking::File(_) | VolumeBacking::Rbd(_) => &[],
        }
    }

    fn check(&self, slot: usize) -> Result<(), VmError> {
        let bad = |what: String| {
            Err(VmError::InvalidConfig(format!(
                "volume slot {slot}: {what}"
            )))
        };
        match self {
            VolumeBacking::Rbd(r) => {
                if [&r.pool, &r.image, &r.user].iter().any(|s| s.is_empty()) {
                    return bad("an rbd image needs a pool, an image and a user".into());
                }
                if r.monitors.is_empty() {
                    return bad("an rbd image needs at least one monitor".into());
                }
                match &r.key {
                    // A path in a QEMU option string: no escaping, so no commas.
                    RbdKey::File(p) if !p.is_absolute() || p.to_string_lossy().contains(',') => {
                        bad(format!(
                            "key file {} must be absolute, without commas",
                            p.display()
                        ))
                    }
                    RbdKey::File(_) => Ok(()),
                    RbdKey::Inline(_) => {
                        bad("an rbd key goes to QEMU's command line as a file, never inline".into())
                    }
                }
            }
            VolumeBacking::File(p) if !p.is_absolute() => Err(VmError::InvalidConfig(format!(
                "volume slot {slot}: path {} is not absolute",
                p.display()
            ))),
            VolumeBacking::FdSet(fds) if fds.iter().any(|&fd| fd < 0) => Err(
                VmError::InvalidConfig(format!("volume slot {slot}: bad descriptor in {fds:?}")),
            ),
            _ => Ok(()),
        }
    }
}

/// Where a standby's QEMU finds the rbd module [`stage_rbd_module`] copied (its
/// `QEMU_MODULE_DIR`): relative to QEMU's working directory, which is the VM's directory both
/// before QEMU chroots into it and after.
pub const MODULE_DIR: &str = "qemu-modules";

/// The libraries QEMU's rbd module links to (`block-rbd.so`'s `NEEDED`), preloaded into a
/// standby's QEMU (`LD_PRELOAD`) with the module staged.
pub const RBD_PRELOAD: &str = "librbd.so.1:librados.so.2";

const RBD_MODULE: &str = "block-rbd.so";

/// Where distributions put QEMU's modules (Debian and Ubuntu first).
const HOST_MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/qemu",
    "/usr/lib64/qemu",
    "/usr/lib/qemu",
];

/// Make the VM in `dir` able to open RBD images after it has chrooted: a standby, whose
/// volumes are attached when a container claims it. `Ok(false)` when the host's QEMU has no rbd
/// module (Debian's `qemu-block-extra` is not installed).
///
/// QEMU's `rbd` driver is a module that QEMU loads (`dlopen`) when a node first needs it. A
/// cold boot and a restore name their RBD nodes on the command line, so it is loaded while QEMU
/// still sees the host's files. A claim's `blockdev-add` comes when QEMU is chrooted into
/// `dir`: there, neither the module (`Unknown driver 'rbd'`, "module block-block-rbd not
/// found") nor the ~30 libraries behind it exist, and no command-line option loads a block
/// module without opening a node. So, rather than widen the chroot to the host's libraries: the
/// module (40 KiB) is copied into `dir`/[`MODULE_DIR`], root's and read-only, and the QEMU
/// started for this VM (see [`crate::Qemu`]) preloads the module's two libraries
/// ([`RBD_PRELOAD`], which bring the rest) and looks for modules in [`MODULE_DIR`] first. The
/// `dlopen` in the chroot then reads the module's file only: the dynamic linker finds every
/// library it needs loaded already. Cost, measured here: ~16 MiB more RSS per standby QEMU
/// (~9 MiB PSS, the libraries' pages being shared), nothing in its confinement.
pub fn stage_rbd_module(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let Some(src) = HOST_MODULE_DIRS
        .iter()
        .map(|d| Path::new(d).join(RBD_MODULE))
        .find(|p| p.is_file())
    else {
        return Ok(false);
    };
    let to = dir.join(MODULE_DIR);
    std::fs::create_dir_all(&to)?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
    let tmp = to.join(format!(".{RBD_MODULE}.tmp"));
    std::fs::copy(&src, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, to.join(RBD_MODULE))?;
    Ok(true)
}

/// Whether the VM in `dir` has the rbd module [`stage_rbd_module`] copies.
pub fn rbd_module_staged(dir: &Path) -> bool {
    dir.join(MODULE_DIR).join(RBD_MODULE).is_file()
}

/// A volume behind a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub backing: VolumeBacking,
    /// The disk's size in bytes, which the guest must see. It must be the disk's own:
    /// announcing it is a `block_resize` (see [`announce_sizes`]), a no-op on the disk only
    /// when the size is the disk's.
    pub size: u64,
}

/// What each slot holds, by slot number.
pub type Volumes = [Option<Volume>; VOLUME_SLOTS];

/// The slot's raw node over `file` (a node definition, or the name of a node that exists).
/// `blockdev-reopen` takes the same options: whatever it is not given reverts to the default.
fn slot_options(slot: usize, file: Value) -> Value {
    json!({ "driver": "raw", "node-name": slot_node(slot), "discard": "unmap", "file": file })
}

fn placeholder(slot: usize) -> Value {
    json!({
        "driver": "null-co", "node-name": format!("vol{slot}-empty"),
        "size": EMPTY_SLOT_BYTES, "read-zeroes": true,
    })
}

/// QEMU arguments for every slot, in slot order: the descriptors of each slot given as fds,
/// the slot's node, its device.
pub(crate) fn args(volumes: &Volumes) -> Result<Vec<String>, VmError> {
    let mut a = Vec::new();
    for (slot, volume) in volumes.iter().enumerate() {
        let backing = volume.as_ref().map(|v| &v.backing);
        if let Some(b) = backing {
            b.check(slot)?;
            if let VolumeBacking::Rbd(Rbd {
                key: RbdKey::File(key),
                ..
            }) = b
            {
                a.push("-object".to_string());
                a.push(format!(
                    "secret,id={},format=base64,file={}",
                    secret_id(slot),
                    key.display()
                ));
            }
            for (i, fd) in b.fds().iter().enumerate() {
                a.push("-add-fd".to_string());
                a.push(format!(
                    "fd={fd},set={},opaque={}-{i}",
                    volume_fdset(slot),
                    slot_node(slot)
                ));
            }
        }
        let file = backing.map_or_else(|| placeholder(slot), |b| b.node(slot));
        a.push("-blockdev".to_string());
        a.push(slot_options(slot, file).to_string());
        a.push("-device".to_string());
        // write-cache=on: write-back whatever the backend's default (the guest flushes).
        a.push(format!(
            "virtio-blk-device,drive={},serial={},write-cache=on,{}",
            slot_node(slot),
            volume_serial(slot),
            crate::ON_WRITE_ERROR
        ));
    }
    Ok(a)
}

/// Put `volume` behind slot `slot` of a VM whose slot holds the placeholder (a claimed
/// standby), and announce its size to the guest. Descriptors of a [`VolumeBacking::FdSet`]
/// must be in the slot's set already (`add-fd`); the key of a [`VolumeBacking::Rbd`] must be
/// [`RbdKey::Inline`] (it goes in with `object-add`; a QEMU that runs is chrooted and
/// unprivileged, and reads no key file). The QEMU of a standby opens an RBD image only with
/// the module [`stage_rbd_module`] put in its directory.
pub fn attach(qmp: &mut Qmp, slot: usize, volume: &Volume) -> Result<(), QmpError> {
    if let VolumeBacking::Rbd(r) = &volume.backing {
        let RbdKey::Inline(key) = &r.key else {
            return Err(QmpError::Command {
                command: "object-add".into(),
                message: format!("slot {slot}: a running QEMU takes an rbd key inline only"),
            });
        };
        qmp.execute(
            "object-add",
            json!({ "qom-type": "secret", "id": secret_id(slot), "format": "base64", "data": key }),
        )?;
        if let Err(e) = qmp.execute("blockdev-add", volume.backing.node(slot)) {
            // Leave the slot as it was, so that a claim can be tried again.
            let _ = qmp.execute("object-del", json!({ "id": secret_id(slot) }));
            return Err(e);
        }
    } else {
        qmp.execute("blockdev-add", volume.backing.node(slot))?;
    }
    qmp.execute(
        "blockdev-reopen",
        json!({ "options": [slot_options(slot, json!(disk_node(slot)))] }),
    )?;
    announce_size(qmp, slot, volume.size)
}

/// Tell a guest restored from a template the sizes of the `volumes` now behind its slots.
pub fn announce_sizes(qmp: &mut Qmp, volumes: &Volumes) -> Result<(), QmpError> {
    for (slot, v) in volumes.iter().enumerate() {
        if let Some(v) = v {
            announce_size(qmp, slot, v.size)?;
        }
    }
    Ok(())
}

/// Make the guest re-read slot `slot`'s capacity, `size` bytes (the disk's real size).
///
/// A guest restored from a template (or claimed from a standby) probed the placeholder at its
/// boot; virtio-blk reads the capacity only at probe time and on a config-change interrupt.
/// Putting another disk behind the node (a restore's command line, `blockdev-reopen`) raises no
/// interrupt; a resize does: `block_resize` to the disk's own size truncates nothing (the file
/// stays as it is) but runs the device's resize callback, which raises virtio's config-change
/// notification, and the guest's driver updates the disk's size ("detected capacity change"
/// in its log). Verified under TCG with QEMU 7.2 and Debian's 6.1 kernel: the guest's
/// `/sys/block/vdX/size` goes from the placeholder's 2048 sectors to the volume's within a
/// second, and not before the resize.
///
/// The disk's size is checked first: a resize to another size would really resize it (an RBD
/// image shrunk loses its tail), and a local file's size is checked by the caller but an RBD
/// image's is known only to QEMU.
fn announce_size(qmp: &mut Qmp, slot: usize, size: u64) -> Result<(), QmpError> {
    let nodes = qmp.execute("query-named-block-nodes", json!({ "flat": true }))?;
    let disk = disk_node(slot);
    let actual = nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["node-name"] == disk.as_str())
        .and_then(|n| n["image"]["virtual-size"].as_u64());
    if actual != Some(size) {
        return Err(QmpError::Command {
            command: "block_resize".into(),
            message: format!(
                "volume slot {slot}: the disk has {} bytes, the volume {size}: not resizing it",
                actual.map_or("an unknown number of".to_string(), |a| a.to_string())
            ),
        });
    }
    qmp.execute(
        "block_resize",
        json!({ "node-name": slot_node(slot), "size": size }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(backing: VolumeBacking) -> Volume {
        Volume {
            backing,
            size: 64 << 20,
        }
    }

    #[test]
    fn empty_slots_hold_placeholders_with_serials() {
        let a = args(&Volumes::default()).unwrap();
        assert_eq!(a.len(), VOLUME_SLOTS * 4);
        let node: Value = serde_json::from_str(&a[1]).unwrap();
        assert_eq!(
            node,
            json!({"driver": "raw", "node-name": "vol0", "discard": "unmap",
                   "file": {"driver": "null-co", "node-name": "vol0-empty",
                            "size": 1048576, "read-zeroes": true}})
        );
        assert_eq!(
            a[3],
            "virtio-blk-device,drive=vol0,serial=hyper-vol0,write-cache=on,werror=enospc"
        );
        assert_eq!(
            a[15],
            "virtio-blk-device,drive=vol3,serial=hyper-vol3,write-cache=on,werror=enospc"
        );
    }

    #[test]
    fn files_by_path_or_descriptors() {
        let mut v = Volumes::default();
        v[1] = Some(volume(VolumeBacking::File("/d/volumes/a,b".into())));
        v[2] = Some(volume(VolumeBacking::FdSet(vec![7, 8])));
        let a = args(&v).unwrap();
        let nodes: Vec<Value> = a
            .windows(2)
            .filter(|w| w[0] == "-blockdev")
            .map(|w| serde_json::from_str(&w[1]).unwrap())
            .collect();
        assert_eq!(nodes[0]["file"]["driver"], "null-co");
        // JSON: a comma in a path is just a character.
        assert_eq!(
            nodes[1]["file"],
            json!({"driver": "file", "node-name": "vol1-disk",
                   "filename": "/d/volumes/a,b", "discard": "unmap"})
        );
        assert_eq!(nodes[2]["file"]["filename"], "/dev/fdset/12");
        let fds: Vec<&String> = a
            .windows(2)
            .filter(|w| w[0] == "-add-fd")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            fds,
            ["fd=7,set=12,opaque=vol2-0", "fd=8,set=12,opaque=vol2-1"]
        );
        // The descriptors come before the node that opens them.
        let pos = |x: &str| a.iter().position(|s| s.contains(x)).unwrap();
        assert!(pos("fd=8,set=12") < pos("/dev/fdset/12"));
    }

    fn rbd(key: RbdKey) -> VolumeBacking {
        VolumeBacking::Rbd(Rbd {
            pool: "rbd".into(),
            image: "vol-7".into(),
            user: "hyper".into(),
            monitors: vec![
                Monitor {
                    host: "192.0.2.2".into(),
                    port: 3300,
                },
                Monitor {
                    host: "2001:db8::2".into(),
                    port: 6789,
                },
            ],
            key,
        })
    }

    #[test]
    fn rbd_images_with_their_key_from_a_file() {
        let mut v = Volumes::default();
        v[2] = Some(volume(rbd(RbdKey::File("/d/c/abc/vol2.key".into()))));
        let a = args(&v).unwrap();
        let objects: Vec<&String> = a
            .windows(2)
            .filter(|w| w[0] == "-object")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            objects,
            ["secret,id=vol2-key,format=base64,file=/d/c/abc/vol2.key"]
        );
        let nodes: Vec<Value> = a
            .windows(2)
            .filter(|w| w[0] == "-blockdev")
            .map(|w| serde_json::from_str(&w[1]).unwrap())
            .collect();
        assert_eq!(
            nodes[2],
            json!({"driver": "raw", "node-name": "vol2", "discard": "unmap",
                   "file": {"driver": "rbd", "node-name": "vol2-disk", "pool": "rbd",
                            "image": "vol-7", "user": "hyper", "key-secret": "vol2-key",
                            "auth-client-required": ["cephx"],
                            "server": [{"host": "192.0.2.2", "port": "3300"},
                                       {"host": "2001:db8::2", "port": "6789"}],
                            "discard": "unmap"}})
        );
        // The secret exists before the node that names it; no descriptors, no key anywhere.
        let pos = |x: &str| a.iter().position(|s| s.contains(x)).unwrap();
        assert!(pos("id=vol2-key") < pos("\"vol2-disk\""));
        assert!(!a.iter().any(|s| s == "-add-fd" || s.contains("data=")));
        assert_eq!(v[2].as_ref().unwrap().backing.fds(), &[] as &[i32]);
        // Same device as any other slot.
        assert!(a.contains(
            &"virtio-blk-device,drive=vol2,serial=hyper-vol2,write-cache=on,werror=enospc"
                .to_string()
        ));
    }

    #[test]
    fn rbd_keys_never_inline_on_a_command_line_nor_in_debug_output() {
        let inline = rbd(RbdKey::Inline("AQBsecretsecret==".into()));
        assert!(!format!("{inline:?}").contains("secret"));
        let mut v = Volumes::default();
        v[0] = Some(volume(inline));
        assert!(args(&v).is_err());
        let bad = [
            rbd(RbdKey::File("vol0.key".into())),
            rbd(RbdKey::File("/d/a,b/vol0.key".into())),
            VolumeBacking::Rbd(Rbd {
                monitors: vec![],
                ..match rbd(RbdKey::File("/k".into())) {
                    VolumeBacking::Rbd(r) => r,
                    _ => unreachable!(),
                }
            }),
            VolumeBacking::Rbd(Rbd {
                image: String::new(),
                ..match rbd(RbdKey::File("/k".into())) {
                    VolumeBacking::Rbd(r) => r,
                    _ => unreachable!(),
                }
            }),
        ];
        for (i, b) in bad.into_iter().enumerate() {
            let mut v = Volumes::default();
            v[0] = Some(volume(b));
            assert!(args(&v).is_err(), "bad[{i}]");
        }
    }

    #[test]
    fn the_rbd_module_is_staged_read_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vm-rbdmod-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!rbd_module_staged(&dir));
        let staged = stage_rbd_module(&dir).unwrap();
        assert_eq!(
            staged,
            HOST_MODULE_DIRS
                .iter()
                .any(|d| Path::new(d).join(RBD_MODULE).is_file())
        );
        assert_eq!(rbd_module_staged(&dir), staged);
        if staged {
            let m = std::fs::metadata(dir.join(MODULE_DIR).join(RBD_MODULE)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o644);
            // Again (a standby directory reused): replaced, not refused.
            assert!(stage_rbd_module(&dir).unwrap());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_relative_paths_and_bad_descriptors() {
        for b in [
            VolumeBacking::File("vol.img".into()),
            VolumeBacking::FdSet(vec![-1]),
        ] {
            let mut v = Volumes::default();
            v[0] = Some(volume(b));
            assert!(args(&v).is_err());
        }
    }
}
