//! Taps for the VMs' NICs (DESIGN decision 6): opened inside a network namespace on the host
//! side and handed to the hypervisor as a file descriptor.
//!
//! A tap is opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and is *not* persistent: it exists
//! exactly as long as some process holds its descriptor, so a VM that dies (however it dies)
//! leaves no tap behind. Without `IFF_VNET_HDR` throughput drops 2-3x, and a VM template's
//! virtio-net state only loads behind a backend with the same header setting.
//!
//! The namespace is entered on a short-lived thread of our own ([`create`]): network namespaces
//! are per thread, so the caller's thread (and every other one) stays where it was. A tap made
//! in a namespace stays there after the thread leaves. A [`Netns::Private`] namespace is created
//! for the tap alone and lives as long as the tap does (the tap's socket holds a reference to
//! it): nothing else is in it, so nothing is reachable through it.

use std::ffi::c_int;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// `SIOCBRADDIF` (linux/sockios.h): enslave an interface (by index) to a bridge (by name). Not
/// exported by the libc crate for glibc targets.
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// Where the tap is created.
#[derive(Debug, Clone, Copy)]
pub enum Netns<'a> {
    /// An existing namespace, by its bind-mount path (e.g. `/run/netns/NAME`).
    At(&'a Path),
    /// A fresh namespace of the tap's own (no bridge can be given: there is none in it).
    Private,
}

/// How to set the tap up.
#[derive(Debug, Clone)]
pub struct TapSpec<'a> {
    /// Interface name, at most 15 bytes.
    pub name: &'a str,
    pub mtu: u32,
    /// Bridge (in the same namespace) to enslave the tap to.
    pub bridge: Option<&'a str>,
    /// MAC of the tap itself (the host end), see [`host_side_mac`]. `None`: the kernel's random
    /// one.
    pub host_mac: Option<[u8; 6]>,
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("invalid interface name {0:?} (1 to 15 bytes, no '/', ':' or whitespace)")]
    BadName(String),
    #[error("a private network namespace has no bridge to enslave tap {0} to")]
    BridgeInPrivateNetns(String),
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TapError {
    let what = what.into();
    move |source| TapError::Sys { what, source }
}

/// An open tap. Dropping it closes the descriptor (and removes the tap unless another process,
/// the hypervisor, holds it too).
#[derive(Debug)]
pub struct Tap {
    pub name: String,
    fd: OwnedFd,
}

impl Tap {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The MAC for the host end of a VM's tap: the guest's with the first byte set to `0xfe`
/// (as libvirt does), so it never equals the guest's and sorts above every `02:..` address.
/// A Linux bridge whose address was never set takes the lowest MAC among its ports, and changes
/// it as ports come and go; high tap MACs keep any other port's lower. Only an address set on the
/// bridge itself (`ip link set BR address ..`) stays fixed whatever the ports, which is what
/// keeps the gateway's MAC stable in the guests' ARP caches.
pub fn host_side_mac(guest: [u8; 6]) -> [u8; 6] {
    let mut m = guest;
    m[0] = 0xfe;
    m
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn check_name(name: &str) -> Result<(), TapError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(TapError::BadName(name.to_string()))
    }
}

/// Create the tap `spec` in `ns`, set its MTU (and MAC), enslave it to the bridge and bring it
/// up. The returned descriptor is close-on-exec: clear that for the process that inherits it.
pub fn create(ns: Netns<'_>, spec: &TapSpec<'_>) -> Result<Tap, TapError> {
    check_name(spec.name)?;
    if let Some(b) = spec.bridge {
        check_name(b)?;
        if matches!(ns, Netns::Private) {
            return Err(TapError::BridgeInPrivateNetns(spec.name.to_string()));
        }
    }
    let ns_file = match ns {
        Netns::At(p) => {
            Some(File::open(p).map_err(sys(format!("opening network namespace {}", p.display())))?)
        }
        Netns::Private => None,
    };
    on_thread_in(ns_file.as_ref(), || open_configured(spec))
}

/// A tap in a private namespace of its own that can later move into another namespace (a
/// standby VM's NIC, moved into the tenant's namespace when a container claims the VM). The
/// namespace's descriptor is kept to reach the tap there.
#[derive(Debug)]
pub struct PrivateTap {
    pub tap: Tap,
    netns: File,
}

/// Like [`create`] in [`Netns::Private`], keeping the namespace reachable.
pub fn create_private(spec: &TapSpec<'_>) -> Result<PrivateTap, TapError> {
    check_name(spec.name)?;
    if spec.bridge.is_some() {
        return Err(TapError::BridgeInPrivateNetns(spec.name.to_string()));
    }
    on_thread_in(None, || {
        let tap = open_configured(spec)?;
        let netns = File::open("/proc/thread-self/ns/net")
            .map_err(sys("opening the private network namespace"))?;
        Ok(PrivateTap { tap, netns })
    })
}

impl PrivateTap {
    /// Move the tap into the namespace at `ns`, renamed to `spec.name`, and set it up there as
    /// [`create`] does (MTU, MAC, bridge, up). The descriptor (and so the hypervisor's) stays
    /// the same: the device moves, not the file.
    pub fn move_to(self, ns: &Path, spec: &TapSpec<'_>) -> Result<Tap, TapError> {
        check_name(spec.name)?;
        if let Some(b) = spec.bridge {
            check_name(b)?;
        }
        let target =
            File::open(ns).map_err(sys(format!("opening network namespace {}", ns.display())))?;
        let old = self.tap.name.clone();
        on_thread_in(Some(&self.netns), || {
            crate::rtnl::move_link(&old, target.as_fd(), spec.name).map_err(sys(format!(
                "moving tap {old} to {} as {}",
                ns.display(),
                spec.name
            )))
        })?;
        on_thread_in(Some(&target), || configure(spec))?;
        Ok(Tap {
            name: spec.name.to_string(),
            fd: self.tap.fd,
        })
    }
}

/// Runs `f` on a short-lived thread of our own in `ns` (a new namespace when `None`): the
/// caller's thread stays where it was.
fn on_thread_in<R: Send>(
    ns: Option<&File>,
    f: impl FnOnce() -> Result<R, TapError> + Send,
) -> Result<R, TapError> {
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            enter(ns)?;
            f()
        });
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Move the calling thread into `ns`, or into a new namespace when `None`.
fn enter(ns: Option<&File>) -> Result<(), TapError> {
    use nix::sched::CloneFlags;
    let r = match ns {
        Some(f) => nix::sched::setns(f, CloneFlags::CLONE_NEWNET),
        None => nix::sched::unshare(CloneFlags::CLONE_NEWNET),
    };
    r.map_err(|e| TapError::Sys {
        what: if ns.is_some() {
            "entering the network namespace".into()
        } else {
            "creating a private network namespace".into()
        },
        source: e.into(),
    })
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    r
}

/// One ioctl taking a pointer to `arg`.
fn ioctl<T>(
    fd: RawFd,
    req: libc::c_ulong,
    arg: &mut T,
    what: impl FnOnce() -> String,
) -> Result<(), TapError> {
    // SAFETY: every request used here reads or writes at most one `T` (an ifreq) through the
    // pointer, which is valid and exclusively borrowed for the call.
    let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if r < 0 {
        return Err(sys(what())(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn open_configured(spec: &TapSpec<'_>) -> Result<Tap, TapError> {
    let name = spec.name;
    // std opens with O_CLOEXEC.
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(sys("opening /dev/net/tun"))?;
    let mut r = ifreq(name);
    r.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &mut r, || {
        format!("creating tap {name} (TUNSETIFF)")
    })?;
    configure(spec)?;
    Ok(Tap {
        name: name.to_string(),
        fd: tun.into(),
    })
}

/// Set up the existing tap `spec.name` in the calling thread's namespace.
fn configure(spec: &TapSpec<'_>) -> Result<(), TapError> {
    let name = spec.name;
    let ctl = control_socket()?;
    let ctl = ctl.as_raw_fd();
    if let Some(mac) = spec.host_mac {
        let mut r = ifreq(name);
        // SAFETY: writing the hwaddr member of the request union.
        unsafe {
            r.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (dst, src) in r.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                *dst = src as libc::c_char;
            }
        }
        ioctl(ctl, libc::SIOCSIFHWADDR, &mut r, || {
            format!("setting the MAC of tap {name}")
        })?;
    }
    let mut r = ifreq(name);
    r.ifr_ifru.ifru_mtu = spec.mtu as c_int;
    ioctl(ctl, libc::SIOCSIFMTU, &mut r, || {
        format!("setting MTU {} on tap {name}", spec.mtu)
    })?;
    if let Some(bridge) = spec.bridge {
        let mut r = ifreq(name);
        ioctl(ctl, libc::SIOCGIFINDEX, &mut r, || {
            format!("index of tap {name}")
        })?;
        // SAFETY: SIOCGIFINDEX filled the ifindex member.
        let index = unsafe { r.ifr_ifru.ifru_ifindex };
        let mut b = ifreq(bridge);
        b.ifr_ifru.ifru_ifindex = index;
        ioctl(ctl, SIOCBRADDIF, &mut b, || {
            format!("adding tap {name} to bridge {bridge}")
        })?;
    }
    let mut r = ifreq(name);
    ioctl(ctl, libc::SIOCGIFFLAGS, &mut r, || {
        format!("flags of tap {name}")
    })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    unsafe { r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(ctl, libc::SIOCSIFFLAGS, &mut r, || {
        format!("bringing tap {name} up")
    })
}

/// A datagram socket in the current thread's namespace, for the interface ioctls.
fn control_socket() -> Result<OwnedFd, TapError> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(sys("opening a control socket")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:aB:00:ff:10:01"),
            Some([2, 0xab, 0, 0xff, 0x10, 1])
        );
        for bad in [
            "",
            "02:ab:00:ff:10",
            "02:ab:00:ff:10:01:02",
            "2:ab:00:ff:10:01",
            "zz:ab:00:ff:10:01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(host_side_mac([2, 1, 2, 3, 4, 5]), [0xfe, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn names() {
        assert!(check_name("tap0123456789ab").is_ok());
        for bad in ["", "tap0123456789abc", "a/b", "a b", "a:b", ".."] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            create(
                Netns::Private,
                &TapSpec {
                    name: "tap0",
                    mtu: 1500,
                    bridge: Some("br0"),
                    host_mac: None
                }
            ),
            Err(TapError::BridgeInPrivateNetns(_))
        ));
    }

    /// Needs root (CAP_NET_ADMIN); skipped otherwise. Everything happens in a private namespace.
    #[test]
    fn private_tap_lives_as_long_as_its_fd() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let tap = create(
            Netns::Private,
            &TapSpec {
                name: "tapx",
                mtu: 1450,
                bridge: None,
                host_mac: Some(host_side_mac([2, 0, 0, 0, 0, 9])),
            },
        )
        .unwrap();
        // The tap is in its own namespace, not ours.
        assert!(!Path::new("/sys/class/net/tapx").exists());
        let fdinfo =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", tap.raw_fd())).unwrap();
        assert!(fdinfo.contains("iff:\ttapx"), "{fdinfo}");
        drop(tap);
    }
}
