//! QEMU `microvm` command line.
//!
//! Layout (fixed per size, so a template snapshot fits every container of that size):
//! 1. serial console (ISA ttyS0) to `DIR/console.log`;
//! 2. `virtio-serial-device` with one `virtserialport` named `agent` on a unix-socket chardev
//!    `DIR/agent.sock` (server, no wait): the host-guest channel;
//! 3. root disk: qcow2 overlay as `virtio-blk-device`;
//! 4. [`crate::VOLUME_SLOTS`] volume slots, each a `virtio-blk-device` with its serial (see
//!    [`crate::volume`]);
//! 5. NIC: `virtio-net-device` on an inherited tap fd with virtio-net headers (see
//!    [`crate::NicConfig`]).
//!
//! Confinement: everything is opened while QEMU is still root; then QEMU chroots into `DIR`,
//! switches to the `run_as` user and runs under seccomp (`-sandbox`), so a compromised QEMU can
//! reach only its own directory.
//!
//! Environment ([`Qemu::command_for`]): QEMU runs in `DIR` (its working directory before the
//! chroot is the one after), with `CEPH_CONF=/dev/null`, so that librados in QEMU (RBD volumes)
//! reads no `ceph.conf` in any boot: everything it needs is in the block node's options, and a
//! host's `/etc/ceph/ceph.conf` (its log files, admin sockets, options) would otherwise apply
//! to the QEMUs that open their images before they chroot and not to those that open them after.
//! librados takes the path from `CEPH_CONF`; QEMU ignores a failure to read it when it names no
//! `conf` itself, and after the chroot `/dev/null` does not exist: no configuration either way.
//! QEMU runs without transparent huge pages (`PR_SET_THP_DISABLE`, see there).
//! A standby's QEMU may preload the rbd module's libraries (see
//! [`crate::volume::stage_rbd_module`]).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::{Accel, Boot, Hypervisor, VmConfig, VmError};

/// Kernel command line every guest gets. `tsc_early_khz` is added under TCG only. Three cut an
/// idle guest's periodic work, each wake-up of which costs its QEMU host CPU (issue 19):
/// `psi=0` and `nowatchdog` (no pressure averaging every 2 s, no soft-lockup timer every 4 s),
/// and no proactive compaction (kcompactd scored every zone's fragmentation twice a second;
/// compaction on demand stays): that one took an idle VM from 0.22% of a core to 0.07% here.
/// `lsm=`: Debian's security modules but TOMOYO, which has no policy in a guest and enforces
/// nothing, yet works out the path of every program run (a claim of a standby translated 50
/// blocks of it under TCG).
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check \
cryptomgr.notests pci=off 8250.nr_uarts=1 i8042.noaux i8042.nokbd i8042.nopnp i8042.dumbkbd \
psi=0 nowatchdog sysctl.vm.compaction_proactiveness=0 \
lsm=landlock,lockdown,yama,loadpin,safesetid,integrity,apparmor,bpf";

/// seccomp policy: no obsolete syscalls, no set*id, no spawning helpers, no scheduler/affinity
/// changes. Used when QEMU stays root (no `run_as`).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// seccomp policy with `-runas`. QEMU 7.2 installs the seccomp filter *before* it switches user,
/// so `elevateprivileges=deny` kills it with SIGSYS on its own setgid/setuid (verified here).
/// Leaving set*id allowed costs nothing real: after `-runas` every uid/gid (real, effective,
/// saved) is the unprivileged user's, so no set*id call can regain root.
pub const SANDBOX_RUNAS: &str = "on,obsolete=deny,spawn=deny,resourcecontrol=deny";

/// QEMU microvm.
#[derive(Debug, Default, Clone, Copy)]
pub struct Qemu;

impl Qemu {
    /// The full kernel command line for `cfg`.
    pub fn cmdline(cfg: &VmConfig) -> Result<String, VmError> {
        let mut line = BASE_CMDLINE.to_string();
        if cfg.accel == Accel::Tcg {
            let khz = match cfg.tsc_khz {
                Some(k) => k,
                None => crate::host_tsc_khz().ok_or(VmError::NoTscFrequency)?,
            };
            line.push_str(&format!(" tsc_early_khz={khz}"));
        }
        let extra = cfg.kernel_cmdline_extra.trim();
        if !extra.is_empty() {
            line.push(' ');
            line.push_str(extra);
        }
        Ok(line)
    }
}

fn check_path(what: &str, p: &Path) -> Result<(), VmError> {
    let s = p.to_string_lossy();
    if !p.is_absolute() {
        return Err(VmError::InvalidConfig(format!(
            "{what} path {s:?} must be absolute"
        )));
    }
    // QEMU splits option values on ','; we do not escape, we refuse.
    if s.contains(',') {
        return Err(VmError::InvalidConfig(format!(
            "{what} path {s:?} contains a comma"
        )));
    }
    Ok(())
}

fn check(cfg: &VmConfig) -> Result<(), VmError> {
    if cfg.vcpus == 0 {
        return Err(VmError::InvalidConfig("vcpus must be at least 1".into()));
    }
    if cfg.memory_mib < 64 {
        return Err(VmError::InvalidConfig(
            "memory_mib must be at least 64".into(),
        ));
    }
    for (what, p) in [
        ("kernel", &cfg.kernel),
        ("initrd", &cfg.initrd),
        ("root disk", &cfg.root_disk),
        ("dir", &cfg.dir),
    ] {
        check_path(what, p)?;
    }
    let sock = cfg.agent_sock();
    if sock.as_os_str().len() >= 108 {
        return Err(VmError::InvalidConfig(format!(
            "agent socket path {} is too long for a unix socket (max 107 bytes)",
            sock.display()
        )));
    }
    if let Some(nic) = &cfg.nic {
        if nic.tap_fd < 0 {
            return Err(VmError::InvalidConfig(format!(
                "tap fd {} is not a descriptor",
                nic.tap_fd
            )));
        }
        if !is_mac(&nic.mac) {
            return Err(VmError::InvalidConfig(format!(
                "NIC MAC {:?} is not of the form xx:xx:xx:xx:xx:xx",
                nic.mac
            )));
        }
    }
    Ok(())
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn command(&self, cfg: &VmConfig) -> Result<Command, VmError> {
        self.command_for(cfg, &Boot::cold())
    }

    fn command_for(&self, cfg: &VmConfig, boot: &Boot) -> Result<Command, VmError> {
        let mut cmd = Command::new(&cfg.binary);
        cmd.args(self.args_for(cfg, boot)?);
        cmd.current_dir(&cfg.dir);
        cmd.env("CEPH_CONF", "/dev/null");
        // No transparent huge pages: QEMU asks for them on TCG's code buffer, which then grows
        // 2 MiB at a time; 4 KiB pages cost an idle VM ~4 MiB less, with no slower start
        // measured (issue 19).
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if matches!(boot, Boot::Standby { .. }) && crate::volume::rbd_module_staged(&cfg.dir) {
            cmd.env("LD_PRELOAD", crate::volume::RBD_PRELOAD);
            cmd.env("QEMU_MODULE_DIR", crate::volume::MODULE_DIR);
        }
        Ok(cmd)
    }

    fn args(&self, cfg: &VmConfig) -> Result<Vec<String>, VmError> {
        self.args_for(cfg, &Boot::cold())
    }

    fn args_for(&self, cfg: &VmConfig, boot: &Boot) -> Result<Vec<String>, VmError> {
        check(cfg)?;
        if let Boot::TemplateSave { ram } | Boot::Restore { ram, .. } | Boot::Standby { ram, .. } =
            boot
        {
            check_path("template RAM file", ram)?;
        }
        let volumes = crate::volume::args(boot.volumes())?;
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        let dir = cfg.dir.to_string_lossy().into_owned();
        let console = cfg.console_log().to_string_lossy().into_owned();
        let agent = cfg.agent_sock().to_string_lossy().into_owned();
        let root = cfg.root_disk.to_string_lossy().into_owned();

        // Template boots put guest RAM in a file: shared (written through) while the template is
        // made, private copy-on-write when a container restores it. Everything else stays the
        // same, so the device slots match.
        // No option ROMs: qboot boots the kernel from fw_cfg by itself, and a restore, which
        // boots nothing, must present the same RAM blocks as its template (an option ROM is one).
        // No PIT: the guest keeps time with the TSC and the APIC timer, and the PIT that
        // firmware left ticking woke QEMU's main loop 36 times a second for nothing, half the
        // host CPU of an idle VM under TCG (issue 19).
        match boot {
            Boot::Cold { .. } => push(&["-M", "microvm,rtc=on,pit=off,x-option-roms=off"]),
            Boot::TemplateSave { ram } | Boot::Restore { ram, .. } | Boot::Standby { ram, .. } => {
                let share = if matches!(boot, Boot::TemplateSave { .. }) {
                    "on"
                } else {
                    "off"
                };
                push(&[
                    "-M",
                    "microvm,rtc=on,pit=off,x-option-roms=off,memory-backend=ram",
                ]);
                push(&[
                    "-object",
                    &format!(
                        "memory-backend-file,id=ram,size={}M,mem-path={},share={share}",
                        cfg.memory_mib,
                        ram.display()
                    ),
                ]);
            }
        }
        match cfg.accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            // ARAT (the APIC timer keeps running in idle states): without it the guest kernel
            // cannot stop its tick when idle (microvm has no broadcast timer), and an idle VM
            // under TCG spends 5% of a core on 250 timer interrupts a second.
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "qemu64,+arat"]),
        }
        push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
        push(&[
            "-smp",
            &cfg.vcpus.to_string(),
            "-m",
            &format!("{}M", cfg.memory_mib),
        ]);
        // A restored guest has booted already. QEMU keeps a kernel and initramfs it is given in
        // its own memory for fw_cfg for the VM's whole life (17 MiB a VM here), so restores get
        // neither.
        if matches!(boot, Boot::Cold { .. } | Boot::TemplateSave { .. }) {
            push(&[
                "-kernel",
                &cfg.kernel.to_string_lossy(),
                "-initrd",
                &cfg.initrd.to_string_lossy(),
            ]);
            push(&["-append", &Qemu::cmdline(cfg)?]);
        }
        // 1. console
        push(&[
            "-chardev",
            &format!("file,id=console,path={console}"),
            "-serial",
            "chardev:console",
        ]);
        // 2. agent port
        push(&[
            "-chardev",
            &format!("socket,id=agent,path={agent},server=on,wait=off"),
        ]);
        push(&["-device", "virtio-serial-device,id=vser0,max_ports=2"]);
        push(&[
            "-device",
            &format!(
                "virtserialport,bus=vser0.0,chardev=agent,name={}",
                crate::AGENT_PORT_NAME
            ),
        ]);
        // 3. root disk (see `crate::root`).
        push(
            &crate::root::args(boot, &root)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        // 4. volume slots, in every boot (a template's and a standby's are all placeholders).
        push(&volumes.iter().map(String::as_str).collect::<Vec<_>>());
        // 5. NIC, after the volume slots for every size, so templates keep the same virtio-mmio
        //    slots. The tap has IFF_VNET_HDR (throughput; and a template's virtio-net state, with
        //    its negotiated offloads, loads only behind the same kind of backend). QEMU 7.2 reads
        //    that flag from the fd and refuses `vnet_hdr=` beside `fd=`. No vhost:
        //    /dev/vhost-net is missing on the development machines.
        if let Some(nic) = &cfg.nic {
            push(&[
                "-netdev",
                &format!("tap,id=net0,fd={}", nic.tap_fd),
                "-device",
                &format!("virtio-net-device,netdev=net0,mac={}", nic.mac),
            ]);
        }
        // Control socket in every boot (template saves and restores, claims, pause, the shim's
        // resume of a VM paused by a full host disk, see [`crate::ON_WRITE_ERROR`]), and the
        // events monitor beside it; incoming migration for restores.
        for sock in [cfg.qmp_sock(), cfg.qmp_events_sock()] {
            push(&[
                "-qmp",
                &format!("unix:{},server=on,wait=off", sock.display()),
            ]);
        }
        if matches!(boot, Boot::Restore { .. } | Boot::Standby { .. }) {
            push(&["-incoming", "defer"]);
        }
        // Confinement.
        match &cfg.run_as {
            Some(user) => push(&["-sandbox", SANDBOX_RUNAS, "-runas", user]),
            None => push(&["-sandbox", SANDBOX]),
        }
        push(&["-chroot", &dir]);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::NicConfig;

    fn cfg(accel: Accel) -> VmConfig {
        VmConfig {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            accel,
            kernel: "/d/kernel/vmlinuz".into(),
            initrd: "/d/kernel/initramfs-x.img".into(),
            kernel_cmdline_extra: "hyper.debug=1".into(),
            vcpus: 2,
            memory_mib: 512,
            root_disk: "/d/c/abc/root.qcow2".into(),
            dir: PathBuf::from("/d/c/abc"),
            run_as: Some("hyper-vm".into()),
            tsc_khz: Some(2_596_150),
            nic: Some(NicConfig {
                tap_fd: 9,
                mac: "02:42:ac:10:00:05".into(),
            }),
        }
    }

    fn value_of<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn tcg_gets_tsc_khz() {
        let args = Qemu.args(&cfg(Accel::Tcg)).unwrap();
        assert_eq!(value_of(&args, "-accel"), ["tcg"]);
        let append = value_of(&args, "-append")[0];
        assert!(append.starts_with(BASE_CMDLINE), "{append}");
        assert!(append.contains(" tsc_early_khz=2596150"), "{append}");
        assert!(append.ends_with(" hyper.debug=1"), "{append}");
        assert_eq!(value_of(&args, "-cpu"), ["qemu64,+arat"]);
    }

    #[test]
    fn kvm_has_no_tsc_khz() {
        let args = Qemu.args(&cfg(Accel::Kvm)).unwrap();
        assert_eq!(value_of(&args, "-accel"), ["kvm"]);
        assert_eq!(value_of(&args, "-cpu"), ["host"]);
        assert!(!value_of(&args, "-append")[0].contains("tsc_early_khz"));
    }

    #[test]
    fn sandbox_runas_chroot() {
        let args = Qemu.args(&cfg(Accel::Tcg)).unwrap();
        assert_eq!(
            value_of(&args, "-sandbox"),
            ["on,obsolete=deny,spawn=deny,resourcecontrol=deny"]
        );
        assert_eq!(value_of(&args, "-runas"), ["hyper-vm"]);
        assert_eq!(value_of(&args, "-chroot"), ["/d/c/abc"]);
        let mut c = cfg(Accel::Tcg);
        c.run_as = None;
        let args = Qemu.args(&c).unwrap();
        assert!(value_of(&args, "-runas").is_empty());
        assert_eq!(
            value_of(&args, "-sandbox"),
            ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        );
    }

    #[test]
    fn machine_and_devices() {
        let args = Qemu.args(&cfg(Accel::Tcg)).unwrap();
        assert_eq!(
            value_of(&args, "-M"),
            ["microvm,rtc=on,pit=off,x-option-roms=off"]
        );
        for f in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(args.iter().any(|a| a == f), "{f}");
        }
        assert_eq!(value_of(&args, "-smp"), ["2"]);
        assert_eq!(value_of(&args, "-m"), ["512M"]);
        let chardevs = value_of(&args, "-chardev");
        assert!(chardevs.contains(&"file,id=console,path=/d/c/abc/console.log"));
        assert!(chardevs.contains(&"socket,id=agent,path=/d/c/abc/agent.sock,server=on,wait=off"));
        let devices = value_of(&args, "-device");
        assert_eq!(devices[0], "virtio-serial-device,id=vser0,max_ports=2");
        assert!(devices[1].contains("name=agent"));
        assert_eq!(devices[2], "virtio-blk-device,drive=root,werror=enospc");
        assert!(value_of(&args, "-drive")[0].contains("format=qcow2,if=none"));
        // The volume slots come right after the root disk, each with its serial.
        for slot in 0..crate::VOLUME_SLOTS {
            assert_eq!(
                devices[3 + slot],
                format!("virtio-blk-device,drive=vol{slot},serial=hyper-vol{slot},write-cache=on,werror=enospc")
            );
        }
        // The NIC comes right after the volume slots, on the inherited tap fd.
        assert_eq!(
            devices[7],
            "virtio-net-device,netdev=net0,mac=02:42:ac:10:00:05"
        );
        assert_eq!(devices.len(), 8);
        assert_eq!(value_of(&args, "-netdev"), ["tap,id=net0,fd=9"]);
        let pos = |x: &str| args.iter().position(|a| a == x).unwrap();
        assert!(pos("virtio-blk-device,drive=root,werror=enospc") < pos(devices[3]));
        assert!(pos(devices[6]) < pos("tap,id=net0,fd=9"));
        assert!(!args.iter().any(|a| a.contains("acpi=off")));
    }

    #[test]
    fn template_boots_share_or_restore_ram() {
        let c = cfg(Accel::Tcg);
        let cold = Qemu.args(&c).unwrap();
        let save = Qemu
            .args_for(
                &c,
                &Boot::TemplateSave {
                    ram: "/d/templates/k/ram".into(),
                },
            )
            .unwrap();
        let restore = Qemu
            .args_for(
                &c,
                &Boot::Restore {
                    ram: "/d/templates/k/ram".into(),
                    root_fds: Some([7, 8]),
                    volumes: Default::default(),
                },
            )
            .unwrap();
        assert!(!cold.iter().any(|a| a == "-incoming"));
        assert_eq!(value_of(&cold, "-qmp"), value_of(&save, "-qmp"));
        assert_eq!(
            value_of(&save, "-object"),
            ["memory-backend-file,id=ram,size=512M,mem-path=/d/templates/k/ram,share=on"]
        );
        assert_eq!(
            value_of(&restore, "-object"),
            ["memory-backend-file,id=ram,size=512M,mem-path=/d/templates/k/ram,share=off"]
        );
        for a in [&save, &restore] {
            assert_eq!(
                value_of(a, "-M"),
                ["microvm,rtc=on,pit=off,x-option-roms=off,memory-backend=ram"]
            );
            assert_eq!(
                value_of(a, "-qmp"),
                [
                    "unix:/d/c/abc/qmp.sock,server=on,wait=off",
                    "unix:/d/c/abc/qmp-events.sock,server=on,wait=off"
                ]
            );
            // Same devices, in the same order, as a cold boot.
            assert_eq!(value_of(a, "-device"), value_of(&cold, "-device"));
        }
        // The template boots the kernel; a restore has no kernel to keep in memory.
        assert_eq!(value_of(&save, "-append"), value_of(&cold, "-append"));
        assert_eq!(value_of(&save, "-kernel"), ["/d/kernel/vmlinuz"]);
        for flag in ["-kernel", "-initrd", "-append"] {
            assert!(value_of(&restore, flag).is_empty(), "{flag}");
        }
        assert_eq!(value_of(&restore, "-incoming"), ["defer"]);
        assert_eq!(
            value_of(&restore, "-add-fd"),
            ["fd=7,set=1,opaque=root-ro", "fd=8,set=1,opaque=root-rw"]
        );
        assert!(value_of(&restore, "-drive")[0].starts_with("id=root,file=/dev/fdset/1,"));
        assert!(value_of(&save, "-drive")[0].contains("driver=null-co"));
        let standby = Qemu
            .args_for(
                &c,
                &Boot::Standby {
                    ram: "/d/templates/k/ram".into(),
                    root_fds: [7, 8],
                },
            )
            .unwrap();
        assert_eq!(value_of(&standby, "-device"), value_of(&cold, "-device"));
        assert_eq!(value_of(&standby, "-object"), value_of(&restore, "-object"));
        assert_eq!(value_of(&standby, "-incoming"), ["defer"]);
        assert!(value_of(&standby, "-kernel").is_empty());
        assert!(value_of(&standby, "-drive").is_empty());
        // The scratch overlay under the root slot's raw node (see `crate::root`), then the
        // volume slots.
        let nodes: Vec<serde_json::Value> = value_of(&standby, "-blockdev")
            .into_iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        assert_eq!(
            (&nodes[0]["node-name"], &nodes[0]["file"]["filename"]),
            (&"placeholder".into(), &"/dev/fdset/1".into())
        );
        assert_eq!(
            (&nodes[1]["node-name"], &nodes[1]["file"]),
            (&"root".into(), &"placeholder".into())
        );
        assert_eq!(value_of(&standby, "-add-fd"), value_of(&restore, "-add-fd"));
        assert!(value_of(&save, "-incoming").is_empty());
        assert!(Qemu
            .args_for(
                &c,
                &Boot::Restore {
                    ram: "/d/a,b".into(),
                    root_fds: None,
                    volumes: Default::default(),
                }
            )
            .is_err());
    }

    /// The slots' nodes (`-blockdev` JSON) of an argument vector, by slot.
    fn slot_nodes(args: &[String]) -> Vec<serde_json::Value> {
        value_of(args, "-blockdev")
            .into_iter()
            .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .filter(|n| {
                n["node-name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("vol"))
            })
            .collect()
    }

    #[test]
    fn volumes_in_every_boot() {
        let c = cfg(Accel::Tcg);
        let ram = PathBuf::from("/d/templates/k/ram");
        let mut by_path = crate::Volumes::default();
        by_path[1] = Some(crate::Volume {
            backing: crate::VolumeBacking::File("/d/volumes/v1.img".into()),
            size: 64 << 20,
        });
        let cold = Qemu.args_for(&c, &Boot::Cold { volumes: by_path }).unwrap();
        let mut by_fd = crate::Volumes::default();
        by_fd[0] = Some(crate::Volume {
            backing: crate::VolumeBacking::FdSet(vec![11, 12]),
            size: 64 << 20,
        });
        let restore = Qemu
            .args_for(
                &c,
                &Boot::Restore {
                    ram: ram.clone(),
                    root_fds: Some([7, 8]),
                    volumes: by_fd,
                },
            )
            .unwrap();
        let save = Qemu
            .args_for(&c, &Boot::TemplateSave { ram: ram.clone() })
            .unwrap();
        let standby = Qemu
            .args_for(
                &c,
                &Boot::Standby {
                    ram,
                    root_fds: [7, 8],
                },
            )
            .unwrap();
        // Whatever is behind the slots, the devices are the same, in the same order.
        let empty = Qemu.args(&c).unwrap();
        for a in [&cold, &restore, &save, &standby] {
            assert_eq!(value_of(a, "-device"), value_of(&empty, "-device"));
            let nodes = slot_nodes(a);
            assert_eq!(nodes.len(), crate::VOLUME_SLOTS);
            for (slot, n) in nodes.iter().enumerate() {
                assert_eq!(n["node-name"], format!("vol{slot}"));
                assert_eq!(
                    (&n["driver"], &n["discard"]),
                    (&"raw".into(), &"unmap".into())
                );
            }
        }
        let file = |a: &[String], slot: usize| slot_nodes(a)[slot]["file"].clone();
        assert_eq!(file(&cold, 1)["filename"], "/d/volumes/v1.img");
        assert_eq!(file(&restore, 0)["filename"], "/dev/fdset/10");
        assert_eq!(
            value_of(&restore, "-add-fd"),
            [
                "fd=7,set=1,opaque=root-ro",
                "fd=8,set=1,opaque=root-rw",
                "fd=11,set=10,opaque=vol0-0",
                "fd=12,set=10,opaque=vol0-1"
            ]
        );
        for (a, used) in [(&cold, 1), (&restore, 0)] {
            for slot in (0..crate::VOLUME_SLOTS).filter(|&s| s != used) {
                assert_eq!(file(a, slot)["driver"], "null-co");
            }
        }
        for a in [&save, &standby] {
            for slot in 0..crate::VOLUME_SLOTS {
                assert_eq!(
                    file(a, slot),
                    serde_json::json!({"driver": "null-co", "node-name": format!("vol{slot}-empty"),
                                       "size": crate::volume::EMPTY_SLOT_BYTES, "read-zeroes": true})
                );
            }
        }
    }

    /// The class of `crate::root`'s rule, on whole command lines: every block node a guest
    /// writes through, root disk and volumes, in every boot, passes discards on.
    #[test]
    fn every_writable_block_node_passes_discards_on() {
        let c = cfg(Accel::Tcg);
        let ram = PathBuf::from("/d/templates/k/ram");
        let mut by_path = crate::Volumes::default();
        by_path[1] = Some(crate::Volume {
            backing: crate::VolumeBacking::File("/d/volumes/v1.img".into()),
            size: 64 << 20,
        });
        let mut by_fd = crate::Volumes::default();
        by_fd[0] = Some(crate::Volume {
            backing: crate::VolumeBacking::FdSet(vec![11, 12]),
            size: 64 << 20,
        });
        let boots = [
            Boot::Cold { volumes: by_path },
            Boot::Restore {
                ram: ram.clone(),
                root_fds: Some([7, 8]),
                volumes: by_fd,
            },
            Boot::Standby {
                ram,
                root_fds: [7, 8],
            },
        ];
        for (i, boot) in boots.iter().enumerate() {
            let args = Qemu.args_for(&c, boot).unwrap();
            let nodes: Vec<(String, String)> = args
                .windows(2)
                .filter(|w| w[0] == "-blockdev" || w[0] == "-drive")
                .flat_map(|w| crate::root::tests::discards(&w[1]))
                .collect();
            // The root disk's nodes and those of the volumes behind their slots.
            assert!(nodes.len() >= 3, "test[{i}]: {nodes:?}");
            for (node, discard) in nodes {
                assert_eq!(discard, "unmap", "test[{i}]: node {node}");
            }
        }
    }

    #[test]
    fn qemu_runs_in_its_directory_without_ceph_conf_and_standbys_preload_rbd() {
        let dir = std::env::temp_dir().join(format!("vm-qemu-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = cfg(Accel::Tcg);
        c.dir = dir.clone();
        let env = |cmd: &Command, k: &str| {
            cmd.get_envs()
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| v)
                .map(|v| v.to_string_lossy().into_owned())
        };
        let standby = Boot::Standby {
            ram: "/d/templates/k/ram".into(),
            root_fds: [7, 8],
        };
        for boot in [Boot::cold(), standby.clone()] {
            let cmd = Qemu.command_for(&c, &boot).unwrap();
            assert_eq!(cmd.get_current_dir(), Some(dir.as_path()));
            assert_eq!(env(&cmd, "CEPH_CONF").as_deref(), Some("/dev/null"));
            // Nothing preloaded without the module in the VM's directory.
            assert_eq!(env(&cmd, "LD_PRELOAD"), None);
        }
        std::fs::create_dir_all(dir.join(crate::volume::MODULE_DIR)).unwrap();
        std::fs::write(dir.join(crate::volume::MODULE_DIR).join("block-rbd.so"), "").unwrap();
        let cmd = Qemu.command_for(&c, &standby).unwrap();
        assert_eq!(
            env(&cmd, "LD_PRELOAD").as_deref(),
            Some("librbd.so.1:librados.so.2")
        );
        assert_eq!(
            env(&cmd, "QEMU_MODULE_DIR").as_deref(),
            Some("qemu-modules")
        );
        // Only a standby attaches volumes after it has chrooted.
        let cold = Qemu.command_for(&c, &Boot::cold()).unwrap();
        assert_eq!(env(&cold, "LD_PRELOAD"), None);
        assert_eq!(
            Qemu.command(&c).unwrap().get_current_dir(),
            Some(dir.as_path())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_bad_config() {
        let mut c = cfg(Accel::Tcg);
        c.root_disk = "/d/a,b.qcow2".into();
        assert!(Qemu.args(&c).is_err());
        let mut c = cfg(Accel::Tcg);
        c.dir = PathBuf::from(format!("/{}", "x".repeat(100)));
        assert!(Qemu.args(&c).is_err());
        let mut c = cfg(Accel::Tcg);
        c.vcpus = 0;
        assert!(Qemu.args(&c).is_err());
        let mut c = cfg(Accel::Tcg);
        c.nic.as_mut().unwrap().tap_fd = -1;
        assert!(Qemu.args(&c).is_err());
        for mac in [
            "02:42:ac:10:00",
            "02:42:ac:10:00:5",
            "02:42:ac:10:00:05,x=y",
        ] {
            let mut c = cfg(Accel::Tcg);
            c.nic.as_mut().unwrap().mac = mac.into();
            assert!(Qemu.args(&c).is_err(), "{mac}");
        }
    }

    #[test]
    fn no_nic_leaves_the_slot_out() {
        let mut c = cfg(Accel::Tcg);
        c.nic = None;
        let args = Qemu.args(&c).unwrap();
        assert!(value_of(&args, "-netdev").is_empty());
        assert_eq!(value_of(&args, "-device").len(), 7);
    }
}
