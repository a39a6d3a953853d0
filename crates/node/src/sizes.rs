//! Instance sizes: what `--size` (label `sh_hyper_instancetype`) buys.

use crate::RuntimeError;

pub const DEFAULT_SIZE: &str = "s4";
pub const SIZE_LABEL: &str = "sh_hyper_instancetype";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// Hyper's table (reference/hyper-extensions.md).
pub const SIZES: [Size; 10] = [
    Size {
        name: "s1",
        vcpus: 1,
        memory_mib: 64,
    },
    Size {
        name: "s2",
        vcpus: 1,
        memory_mib: 128,
    },
    Size {
        name: "s3",
        vcpus: 1,
        memory_mib: 256,
    },
    Size {
        name: "s4",
        vcpus: 1,
        memory_mib: 512,
    },
    Size {
        name: "m1",
        vcpus: 1,
        memory_mib: 1024,
    },
    Size {
        name: "m2",
        vcpus: 2,
        memory_mib: 2048,
    },
    Size {
        name: "m3",
        vcpus: 2,
        memory_mib: 4096,
    },
    Size {
        name: "l1",
        vcpus: 4,
        memory_mib: 4096,
    },
    Size {
        name: "l2",
        vcpus: 4,
        memory_mib: 8192,
    },
    Size {
        name: "l3",
        vcpus: 8,
        memory_mib: 16384,
    },
];

/// The guest kernel keeps this much of what QEMU gives it for itself (measured 30-45 MiB on
/// Debian's cloud kernel). We give the VM this much more than the size so MemTotal in the guest
/// comes out close to the size the user pays for.
pub const KERNEL_RESERVE_MIB: u64 = 40;

pub fn lookup(name: &str) -> Result<Size, RuntimeError> {
    SIZES
        .iter()
        .copied()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            let known: Vec<_> = SIZES.iter().map(|s| s.name).collect();
            RuntimeError::Invalid(format!(
                "invalid size {name:?}: choose one of {}",
                known.join(", ")
            ))
        })
}

impl Size {
    /// Memory handed to QEMU (`-m`).
    pub fn vm_memory_mib(&self) -> u64 {
        self.memory_mib + KERNEL_RESERVE_MIB
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lookup_sizes() {
        assert_eq!(super::lookup("m2").unwrap().vcpus, 2);
        assert_eq!(super::lookup("s4").unwrap().memory_mib, 512);
        let err = super::lookup("xl").unwrap_err().to_string();
        assert!(
            err.contains("invalid size \"xl\"") && err.contains("s1"),
            "{err}"
        );
    }
}
