//! Manual check: `cargo run -p vm --example boot -- INIT MODULES_DIR KERNEL ROOT_QCOW2 DIR [RUN_AS]`
//! builds DIR/initramfs.img with INIT as /init and runs QEMU in the foreground.
use std::path::PathBuf;

use vm::{Accel, Hypervisor, Qemu, VmConfig};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(&a[4]);
    let initrd = dir.join("initramfs.img");
    vm::build_initramfs(a[0].as_ref(), a[1].as_ref(), &initrd).expect("initramfs");
    let cfg = VmConfig {
        binary: "/usr/bin/qemu-system-x86_64".into(),
        accel: Accel::resolve(std::env::var("ACCEL").ok().as_deref()).unwrap(),
        kernel: a[2].clone().into(),
        initrd,
        kernel_cmdline_extra: String::new(),
        vcpus: 1,
        memory_mib: 256,
        root_disk: a[3].clone().into(),
        dir,
        run_as: a.get(5).cloned(),
        tsc_khz: None,
        nic: None,
    };
    let mut cmd = Qemu.command(&cfg).unwrap();
    eprintln!("{cmd:?}");
    let st = cmd.status().unwrap();
    eprintln!("qemu: {st}");
}
