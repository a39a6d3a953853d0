//! Hypervisor driver for Hyper's microVMs.
//!
//! One VM per container. The hypervisor sits behind the small [`Hypervisor`] trait so Cloud
//! Hypervisor or Firecracker can be added later; today [`Qemu`] drives
//! `qemu-system-x86_64 -M microvm`.
//!
//! The device layout is fixed per size (DESIGN decision 8, VM templates): the agent's
//! virtio-serial port first, then the root disk, then [`VOLUME_SLOTS`] volume slots (see
//! [`volume`]), then the NIC. A template snapshot taken with this layout can be restored behind
//! another container's disks and tap.
//!
//! [`Boot`] says how a VM comes up: cold, as a template being made (RAM in a shared file, QMP
//! socket), or restored from a template (`-incoming defer`, RAM mapped private from the
//! template's file, root disk through an fd set); [`root`] says what is behind the root slot in
//! each. [`Qmp`] is the small QMP client that drives
//! snapshot and restore, handing QEMU file descriptors with `getfd` (`fd:` migration: QEMU is
//! sandboxed against spawning and chrooted, so neither `exec:` nor paths work). The templates
//! themselves (keys, building, restoring) live in the shim (`shim::template`).
//!
//! [`initramfs::build_initramfs`] builds the guest's initramfs (agent as `/init` plus the virtio
//! modules).

mod accel;
pub mod digest;
pub mod ext4;
pub mod initramfs;
mod qemu;
pub mod qmp;
pub mod root;
pub mod volume;

use std::path::PathBuf;
use std::process::Command;

pub use accel::{host_tsc_khz, Accel, ParseAccelError};
pub use initramfs::{build_initramfs, check_agent, InitramfsError, VIRTIO_MODULES};
pub use qemu::Qemu;
pub use qmp::{Qmp, QmpError};
pub use root::{ROOT_NODE, STANDBY_PLACEHOLDER_NODE};
pub use volume::{
    volume_serial, Monitor, Rbd, RbdKey, Volume, VolumeBacking, Volumes, VOLUME_SLOTS,
};

/// File names inside a VM's directory, shared with the shim.
pub const AGENT_SOCK: &str = "agent.sock";
/// Serial console of the guest, written by the hypervisor.
pub const CONSOLE_LOG: &str = "console.log";
/// QMP control socket: commands, one client at a time.
pub const QMP_SOCK: &str = "qmp.sock";
/// A second QMP monitor, kept open by the shim for QEMU's run-state events (`STOP`, `RESUME`),
/// so that it learns of a VM paused by a full host disk without asking every few seconds.
pub const QMP_EVENTS_SOCK: &str = "qmp-events.sock";

/// What every disk device (the root slot and the volume slots, in every boot) does when a
/// write fails on the host: on ENOSPC the VM pauses (QMP status `io-error`) and retries the
/// write when resumed, rather than the guest seeing an I/O error and its file system going
/// read-only or worse; any other error is reported to the guest (waiting would not cure a
/// failing disk). A device property, not a node's, so it holds whatever node a claim puts
/// behind the slot, and is the same in a template and the VMs restored from it.
pub const ON_WRITE_ERROR: &str = "werror=enospc";

/// Name of the virtio-serial port the agent opens in the guest
/// (`/sys/class/virtio-ports/vportNpM/name`).
pub const AGENT_PORT_NAME: &str = "agent";

/// Everything needed to boot one microVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Hypervisor binary (e.g. `/usr/bin/qemu-system-x86_64`).
    pub binary: PathBuf,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Appended to the base kernel command line.
    pub kernel_cmdline_extra: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// qcow2 overlay of the image's ext4 disk.
    pub root_disk: PathBuf,
    /// The VM's directory: agent socket and console log go here, and the hypervisor is
    /// chrooted into it.
    pub dir: PathBuf,
    /// Unprivileged user the hypervisor switches to once everything is open. `None` keeps root
    /// (tests only).
    pub run_as: Option<String>,
    /// Host TSC frequency in kHz, passed as `tsc_early_khz` under TCG only. `None`: read it from
    /// the host when building the command line.
    pub tsc_khz: Option<u64>,
    /// The VM's one NIC. Every container VM has one (the shim always gives it, so templates
    /// fit); `None` leaves the slot out and is for measurements only (a bare boot floor).
    pub nic: Option<NicConfig>,
}

/// The VM's single NIC (DESIGN decision 6): a virtio-net device on a tap opened by the caller
/// (in the tenant's network namespace) and inherited by the hypervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    /// Tap descriptor, opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (QEMU takes the
    /// virtio-net header setting from the descriptor). The caller makes sure
    /// the hypervisor inherits it (clears close-on-exec in the child).
    pub tap_fd: i32,
    /// The guest's MAC, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
}

impl VmConfig {
    pub fn agent_sock(&self) -> PathBuf {
        self.dir.join(AGENT_SOCK)
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join(CONSOLE_LOG)
    }
    pub fn qmp_sock(&self) -> PathBuf {
        self.dir.join(QMP_SOCK)
    }
    pub fn qmp_events_sock(&self) -> PathBuf {
        self.dir.join(QMP_EVENTS_SOCK)
    }
}

/// Capacity of the root disk slot: every container's overlay has this virtual size, and so has
/// a template's placeholder, so a guest restored from a template has probed a disk of the very
/// size it will find behind the slot (the guest's block driver binds at boot).
pub const ROOT_DISK_BYTES: u64 = 10 << 30;

/// How a VM comes up. The device layout is the same in all of them, which is what lets a
/// template's device state be loaded behind another container's disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Boot the kernel (anonymous RAM), with `volumes` behind the volume slots (by path).
    Cold { volumes: Volumes },
    /// Boot the kernel with guest RAM in `ram`, mapped shared so the file holds the guest's
    /// memory when it is snapshotted; a QMP socket drives the snapshot. Every volume slot holds
    /// the placeholder.
    TemplateSave { ram: PathBuf },
    /// Do not boot: wait (`-incoming defer`) for a template's device state over QMP, with guest
    /// RAM mapped privately (copy-on-write) from the template's `ram`.
    ///
    /// `root_fds` are two inherited descriptors of the root disk, opened read-only and
    /// read-write, given to QEMU as an fd set (`/dev/fdset/1`). An incoming VM opens its disks
    /// inactive (read-only) and reopens them read-write when the migration completes; by then
    /// QEMU is chrooted and cannot reopen a path, so it picks the descriptor from the set. The
    /// `volumes` are given the same way ([`VolumeBacking::FdSet`]); the guest still has the
    /// placeholders' capacity until [`volume::announce_sizes`].
    Restore {
        ram: PathBuf,
        root_fds: Option<[i32; 2]>,
        volumes: Volumes,
    },
    /// Restore like [`Boot::Restore`] into a VM that belongs to no container yet (a standby):
    /// its root slot holds the standby's scratch disk (a qcow2 overlay, given as `root_fds`
    /// like `Restore`'s) as [`STANDBY_PLACEHOLDER_NODE`], under a raw node named
    /// [`ROOT_NODE`] whose `file` child is swapped for the container's disk
    /// (`blockdev-reopen`) when a container claims the VM. Its volume slots hold the
    /// placeholder until then ([`volume::attach`]).
    Standby { ram: PathBuf, root_fds: [i32; 2] },
}

impl Boot {
    /// A cold boot with every volume slot empty.
    pub fn cold() -> Boot {
        Boot::Cold {
            volumes: Volumes::default(),
        }
    }

    /// What the volume slots hold (all empty for a template or a standby).
    pub fn volumes(&self) -> &Volumes {
        static EMPTY: Volumes = [None, None, None, None];
        match self {
            Boot::Cold { volumes } | Boot::Restore { volumes, .. } => volumes,
            Boot::TemplateSave { .. } | Boot::Standby { .. } => &EMPTY,
        }
    }
}

/// Errors building a hypervisor invocation.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("invalid VM configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot read the host TSC frequency from /proc/cpuinfo (needed under TCG)")]
    NoTscFrequency,
}

/// A hypervisor that can boot a [`VmConfig`].
///
/// It only builds the process; the caller (the shim) spawns, supervises and kills it, because
/// the caller owns the process's lifetime (parent-death signal, reaping).
pub trait Hypervisor {
    /// Short name for logs ("qemu").
    fn name(&self) -> &'static str;
    /// The full argument vector of a cold boot with empty volume slots, without the binary.
    fn args(&self, cfg: &VmConfig) -> Result<Vec<String>, VmError>;
    /// The argument vector for `boot`. Hypervisors without templates and volumes support only
    /// a [`Boot::cold`] boot.
    fn args_for(&self, cfg: &VmConfig, boot: &Boot) -> Result<Vec<String>, VmError> {
        match boot {
            Boot::Cold { volumes } if volumes.iter().all(Option::is_none) => self.args(cfg),
            _ => Err(VmError::InvalidConfig(format!(
                "{} supports neither templates nor volumes",
                self.name()
            ))),
        }
    }
    /// A ready-to-spawn command (binary + args; stdio left to the caller).
    fn command(&self, cfg: &VmConfig) -> Result<Command, VmError> {
        let mut cmd = Command::new(&cfg.binary);
        cmd.args(self.args(cfg)?);
        Ok(cmd)
    }
    /// [`Hypervisor::command`] for `boot`.
    fn command_for(&self, cfg: &VmConfig, boot: &Boot) -> Result<Command, VmError> {
        let mut cmd = Command::new(&cfg.binary);
        cmd.args(self.args_for(cfg, boot)?);
        Ok(cmd)
    }
}
