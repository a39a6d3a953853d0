//! Choosing the accelerator: KVM when the CPU has hardware virtualisation (vmx/svm) and
//! `/dev/kvm` opens, TCG otherwise. Some machines expose a paravirtual `/dev/kvm` without
//! vmx/svm that cannot boot a stock kernel, hence both checks.

use std::fmt;
use std::fs::OpenOptions;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// Detect the best accelerator for this host.
    pub fn detect() -> Accel {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let kvm_opens = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        Self::choose(&cpuinfo, kvm_opens)
    }

    /// `explicit` ("kvm", "tcg", "auto" or empty) overrides detection.
    pub fn resolve(explicit: Option<&str>) -> Result<Accel, ParseAccelError> {
        match explicit.map(str::trim) {
            None | Some("") | Some("auto") => Ok(Self::detect()),
            Some(s) => s.parse(),
        }
    }

    /// The decision, separated from the host for tests.
    pub fn choose(cpuinfo: &str, kvm_opens: bool) -> Accel {
        if cpu_has_hw_virt(cpuinfo) && kvm_opens {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

fn cpu_has_hw_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':'))
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown accelerator {0:?} (expected kvm, tcg or auto)")]
pub struct ParseAccelError(pub String);

impl FromStr for Accel {
    type Err = ParseAccelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(ParseAccelError(other.to_string())),
        }
    }
}

/// Host TSC frequency in kHz, from the first "cpu MHz" line of /proc/cpuinfo. Only right on
/// hosts with a constant TSC; used for TCG guests, whose early timer calibration hangs without it.
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_mhz_khz(&cpuinfo)
}

fn parse_cpu_mhz_khz(cpuinfo: &str) -> Option<u64> {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("cpu MHz"))
        .filter_map(|l| l.split_once(':'))
        .find_map(|(_, v)| v.trim().parse::<f64>().ok())
        .filter(|mhz| *mhz > 0.0)
        .map(|mhz| (mhz * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMX: &str = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\ncpu MHz\t\t: 2596.150\n";
    const SVM: &str = "flags\t\t: fpu svm\n";
    const NONE: &str = "flags\t\t: fpu hypervisor sse2\ncpu MHz\t\t: 2100.000\n";

    #[test]
    fn choose_table() {
        let cases = [
            (VMX, true, Accel::Kvm),
            (SVM, true, Accel::Kvm),
            (VMX, false, Accel::Tcg),
            (NONE, true, Accel::Tcg),
            (NONE, false, Accel::Tcg),
        ];
        for (i, (info, kvm, want)) in cases.iter().enumerate() {
            assert_eq!(Accel::choose(info, *kvm), *want, "test[{i}]");
        }
    }

    #[test]
    fn explicit_override() {
        assert_eq!(Accel::resolve(Some("kvm")).unwrap(), Accel::Kvm);
        assert_eq!(Accel::resolve(Some("TCG")).unwrap(), Accel::Tcg);
        assert!(Accel::resolve(Some("xen")).is_err());
    }

    #[test]
    fn tsc_khz() {
        assert_eq!(parse_cpu_mhz_khz(VMX), Some(2_596_150));
        assert_eq!(parse_cpu_mhz_khz(SVM), None);
    }
}
