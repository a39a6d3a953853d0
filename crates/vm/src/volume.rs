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
//! Capacity: a guest restored from a template, or claimed from a standby, probed the slot's
//! placeholder at its boot and keeps that capacity until QEMU tells it the real one
//! ([`announce_sizes`], [`attach`]). It may also have cached the placeholder's zeros: the agent
//! drops the device's buffer cache before it mounts.

use std::path::PathBuf;

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
}

impl VolumeBacking {
    /// The disk as a QEMU block node (`-blockdev` / `blockdev-add` JSON) named
    /// [`disk_node`]`(slot)`: the one place that knows how each kind of backing is opened.
    pub fn node(&self, slot: usize) -> Value {
        let filename = match self {
            VolumeBacking::File(path) => path.to_string_lossy().into_owned(),
            VolumeBacking::FdSet(_) => format!("/dev/fdset/{}", volume_fdset(slot)),
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
            VolumeBacking::File(_) => &[],
        }
    }

    fn check(&self, slot: usize) -> Result<(), VmError> {
        match self {
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
            "virtio-blk-device,drive={},serial={},write-cache=on",
            slot_node(slot),
            volume_serial(slot)
        ));
    }
    Ok(a)
}

/// Put `volume` behind slot `slot` of a VM whose slot holds the placeholder (a claimed
/// standby), and announce its size to the guest. Descriptors of a [`VolumeBacking::FdSet`]
/// must be in the slot's set already (`add-fd`).
pub fn attach(qmp: &mut Qmp, slot: usize, volume: &Volume) -> Result<(), QmpError> {
    qmp.execute("blockdev-add", volume.backing.node(slot))?;
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
fn announce_size(qmp: &mut Qmp, slot: usize, size: u64) -> Result<(), QmpError> {
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
            "virtio-blk-device,drive=vol0,serial=hyper-vol0,write-cache=on"
        );
        assert_eq!(
            a[15],
            "virtio-blk-device,drive=vol3,serial=hyper-vol3,write-cache=on"
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
