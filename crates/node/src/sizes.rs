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

/// The smallest size that holds `memory_bytes` of memory and `nano_cpus` billionths of a CPU
/// (Docker's `--memory` and `--cpus`; 0 asks nothing of that resource): what a Docker client's
/// resource flags buy here. Beyond the largest size: a 400 naming it.
pub fn smallest_holding(memory_bytes: u64, nano_cpus: u64) -> Result<Size, RuntimeError> {
    let mut by_price = SIZES;
    by_price.sort_by_key(|s| (crate::metering::price(s.name), s.memory_mib, s.vcpus));
    by_price
        .iter()
        .copied()
        .find(|s| {
            s.memory_mib << 20 >= memory_bytes && u64::from(s.vcpus) * 1_000_000_000 >= nano_cpus
        })
        .ok_or_else(|| {
            let largest = SIZES[SIZES.len() - 1];
            RuntimeError::Invalid(format!(
                "no size holds {} MiB of memory and {} CPUs: the largest, {}, has {} MiB and {} CPUs",
                memory_bytes.div_ceil(1 << 20),
                nano_cpus as f64 / 1e9,
                largest.name,
                largest.memory_mib,
                largest.vcpus
            ))
        })
}

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
    use super::*;

    #[test]
    fn resource_flags_choose_the_smallest_size_that_holds_them() {
        let cases = [
            (0, 0, "s1"),
            (100 << 20, 0, "s2"),
            (512 << 20, 0, "s4"),
            (513 << 20, 0, "m1"),
            (0, 1_500_000_000, "m2"),
            (3 << 30, 2_000_000_000, "m3"),
            (4 << 30, 3_000_000_000, "l1"),
            (16 << 30, 8_000_000_000, "l3"),
        ];
        for (i, (mem, cpus, want)) in cases.iter().enumerate() {
            assert_eq!(
                smallest_holding(*mem, *cpus).unwrap().name,
                *want,
                "test[{i}]"
            );
        }
        let e = smallest_holding(17 << 30, 0).unwrap_err().to_string();
        assert!(
            e.contains("the largest, l3, has 16384 MiB and 8 CPUs"),
            "{e}"
        );
    }

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
