//! The root slot: the container's disk (a qcow2 overlay over the image's raw ext4) behind the
//! `virtio-blk-device` that comes right after the agent's port in every VM. What is behind it
//! depends on the [`Boot`]:
//! - cold boot: the overlay by path, opened before QEMU chroots;
//! - restore: the overlay as descriptors in fd set 1 (`Boot::Restore`'s `root_fds`): an incoming
//!   VM opens its disks inactive and reopens them read-write when the migration completes, by
//!   then chrooted;
//! - template: a null device of [`crate::ROOT_DISK_BYTES`] that reads zeros: its guest probes it
//!   at boot (no partitions) and drops whatever it read when a container's Start comes (see the
//!   agent's rootfs). A file there would have to be reopened read-only when migration inactivates
//!   it, which a chrooted QEMU cannot do;
//! - standby: a raw node [`ROOT_NODE`] over the standby's scratch overlay
//!   ([`STANDBY_PLACEHOLDER_NODE`], descriptors in fd set 1), whose `file` child a claim swaps for
//!   the container's overlay ([`attach`]).
//!
//! Discards: every node a guest's write goes through is opened with `discard=unmap`, so that what
//! a container deletes and trims (`fstrim`) frees the overlay's clusters and the host file's
//! blocks, whatever the boot. QEMU drops a discard, silently, at the first node on the way down
//! that does not pass it on: a `file` child defined inline takes `unmap` by default, but a node of
//! its own (a `-blockdev`, a `blockdev-add`, one referred to by name) is `ignore` unless told, and
//! `blockdev-reopen` reverts whatever it is not given to the default. So each node's options are
//! written once here ([`slot_options`], [`overlay`]), for the command line and the claim alike.

use serde_json::{json, Value};

use crate::{Boot, Qmp, QmpError};

/// Block node the root slot's device reads through in a [`Boot::Standby`] VM.
pub const ROOT_NODE: &str = "root";
/// The scratch disk under [`ROOT_NODE`] until a container claims the VM.
pub const STANDBY_PLACEHOLDER_NODE: &str = "placeholder";
/// The container's overlay under [`ROOT_NODE`] once a container has claimed the VM.
pub const CLAIMED_NODE: &str = "disk";
/// The raw backing file of [`CLAIMED_NODE`], given by the claim (QEMU is chrooted by then and
/// cannot open the path the overlay names).
const CLAIMED_BASE_NODE: &str = "base";

/// The fd set holding a restore's or a standby's root disk (`/dev/fdset/1`).
const FDSET: u32 = 1;

/// The root slot's raw node ([`ROOT_NODE`]) over `file` (a node's name, or its definition).
/// `blockdev-reopen` takes the same options, and whatever it is not given reverts to the
/// default, `discard=ignore` included.
pub fn slot_options(file: Value) -> Value {
    json!({ "driver": "raw", "node-name": ROOT_NODE, "discard": "unmap", "file": file })
}

/// A qcow2 overlay node `name` over the file `filename` (a path or `/dev/fdset/N`), discards
/// passed on to the file. Its backing file is the one its header names, opened by QEMU, unless
/// `base` names it (a path or `/dev/fdset/N`; opened raw and read-only: hyperd makes every
/// overlay over a raw base, `qemu-img create -F raw`).
pub fn overlay(name: &str, filename: &str, base: Option<&str>) -> Value {
    let mut node = json!({
        "driver": "qcow2", "node-name": name, "discard": "unmap",
        "file": { "driver": "file", "filename": filename, "discard": "unmap" },
    });
    if let Some(base) = base {
        node["backing"] = json!({
            "driver": "raw", "node-name": CLAIMED_BASE_NODE, "read-only": true,
            "file": { "driver": "file", "filename": base, "read-only": true },
        });
    }
    node
}

/// QEMU arguments for the root slot in `boot`: the descriptors of its fd set, its disk, its
/// device. `root` is the overlay's path (opened by path: a cold boot, a restore without
/// descriptors).
pub(crate) fn args(boot: &Boot, root: &str) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    if let Boot::Restore {
        root_fds: Some([ro, rw]),
        ..
    }
    | Boot::Standby {
        root_fds: [ro, rw], ..
    } = boot
    {
        push(&["-add-fd", &format!("fd={ro},set={FDSET},opaque=root-ro")]);
        push(&["-add-fd", &format!("fd={rw},set={FDSET},opaque=root-rw")]);
    }
    let fdset = format!("/dev/fdset/{FDSET}");
    match boot {
        Boot::TemplateSave { .. } => push(&[
            "-drive",
            &format!(
                "id=root,driver=null-co,read-zeroes=on,size={},if=none",
                crate::ROOT_DISK_BYTES
            ),
        ]),
        Boot::Standby { .. } => push(&[
            "-blockdev",
            &overlay(STANDBY_PLACEHOLDER_NODE, &fdset, None).to_string(),
            "-blockdev",
            &slot_options(json!(STANDBY_PLACEHOLDER_NODE)).to_string(),
        ]),
        // `-drive` makes the qcow2 node and its file child with the drive's `discard`.
        Boot::Restore {
            root_fds: Some(_), ..
        } => push(&[
            "-drive",
            &format!("id=root,file={fdset},format=qcow2,if=none,cache=writeback,discard=unmap"),
        ]),
        Boot::Restore { root_fds: None, .. } | Boot::Cold { .. } => push(&[
            "-drive",
            &format!("id=root,file={root},format=qcow2,if=none,cache=writeback,discard=unmap"),
        ]),
    }
    push(&[
        "-device",
        &format!("virtio-blk-device,drive=root,{}", crate::ON_WRITE_ERROR),
    ]);
    a
}

/// Put the container's overlay behind the root slot of a standby's VM: a node for it
/// ([`overlay`]: `file` is `/dev/fdset/N` holding the overlay, `base` the same for its raw
/// backing file when it has one: QEMU is chrooted and cannot open paths), the slot's raw node
/// reopened over it, the scratch disk's node deleted.
pub fn attach(qmp: &mut Qmp, file: &str, base: Option<&str>) -> Result<(), QmpError> {
    qmp.execute("blockdev-add", overlay(CLAIMED_NODE, file, base))?;
    qmp.execute(
        "blockdev-reopen",
        json!({ "options": [slot_options(json!(CLAIMED_NODE))] }),
    )?;
    qmp.execute(
        "blockdev-del",
        json!({ "node-name": STANDBY_PLACEHOLDER_NODE }),
    )?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every node a guest writes through in a `-blockdev` or `-drive` option or a QMP node
    /// definition (not the read-only ones, nor placeholders), with its own `discard` (`-drive`
    /// gives its qcow2 node and file child the drive's).
    pub(crate) fn discards(arg: &str) -> Vec<(String, String)> {
        if let Ok(node) = serde_json::from_str::<Value>(arg) {
            let mut out = Vec::new();
            let mut todo = vec![node];
            while let Some(n) = todo.pop() {
                if n["read-only"] != true && n["driver"] != "null-co" {
                    let name = n["node-name"].as_str().unwrap_or("(inline)").to_string();
                    out.push((name, n["discard"].as_str().unwrap_or("").to_string()));
                }
                for child in ["file", "backing"] {
                    if n[child].is_object() {
                        todo.push(n[child].clone());
                    }
                }
            }
            return out;
        }
        let discard = arg
            .split(',')
            .find_map(|kv| kv.strip_prefix("discard="))
            .unwrap_or("");
        if arg.contains("null-co") {
            return vec![];
        }
        vec![(arg.to_string(), discard.to_string())]
    }

    #[test]
    fn every_root_node_passes_discards_on() {
        let boots = [
            Boot::cold(),
            Boot::Restore {
                ram: "/d/t/ram".into(),
                root_fds: Some([7, 8]),
                volumes: Default::default(),
            },
            Boot::Restore {
                ram: "/d/t/ram".into(),
                root_fds: None,
                volumes: Default::default(),
            },
            Boot::Standby {
                ram: "/d/t/ram".into(),
                root_fds: [7, 8],
            },
        ];
        for (i, boot) in boots.iter().enumerate() {
            let a = args(boot, "/d/c/abc/root.qcow2");
            let nodes: Vec<(String, String)> = a
                .windows(2)
                .filter(|w| w[0] == "-blockdev" || w[0] == "-drive")
                .flat_map(|w| discards(&w[1]))
                .collect();
            assert!(!nodes.is_empty(), "test[{i}]: {a:?}");
            for (node, discard) in nodes {
                assert_eq!(discard, "unmap", "test[{i}]: node {node}");
            }
            assert_eq!(
                a.last().unwrap(),
                "virtio-blk-device,drive=root,werror=enospc"
            );
        }
        // What a claim adds and reopens.
        for (i, node) in [
            overlay(CLAIMED_NODE, "/dev/fdset/2", Some("/dev/fdset/3")),
            slot_options(json!(CLAIMED_NODE)),
        ]
        .iter()
        .enumerate()
        {
            let nodes = discards(&node.to_string());
            assert!(!nodes.is_empty());
            for (name, discard) in nodes {
                assert_eq!(discard, "unmap", "claim[{i}]: node {name}");
            }
        }
    }

    #[test]
    fn a_standby_slot_is_a_raw_node_over_its_scratch_overlay() {
        let a = args(
            &Boot::Standby {
                ram: "/d/t/ram".into(),
                root_fds: [7, 8],
            },
            "/unused",
        );
        let blockdevs: Vec<Value> = a
            .windows(2)
            .filter(|w| w[0] == "-blockdev")
            .map(|w| serde_json::from_str(&w[1]).unwrap())
            .collect();
        assert_eq!(
            blockdevs,
            [
                json!({"driver": "qcow2", "node-name": "placeholder", "discard": "unmap",
                       "file": {"driver": "file", "filename": "/dev/fdset/1", "discard": "unmap"}}),
                json!({"driver": "raw", "node-name": "root", "discard": "unmap",
                       "file": "placeholder"}),
            ]
        );
        let claimed = overlay(CLAIMED_NODE, "/dev/fdset/2", Some("/dev/fdset/3"));
        assert_eq!(claimed["backing"]["read-only"], true);
        assert_eq!(claimed["backing"]["file"]["filename"], "/dev/fdset/3");
        assert!(overlay(CLAIMED_NODE, "/dev/fdset/2", None)
            .get("backing")
            .is_none());
    }
}
