//! The guest's network, set up at `Start` (never before: a guest restored from a VM template
//! must not use the template's identity on anyone's network).
//!
//! `lo` always comes up. With a [`NetConfig`], `eth0` (the VM's one virtio-net NIC) gets its MAC,
//! MTU and IPv4 address, comes up, and a default route goes via the gateway. Plain ioctls on a
//! datagram socket, like ifconfig and route do: the agent is a static binary and netlink would
//! be a dependency for four calls. The container's processes share this network namespace.
//!
//! The MAC matters after a template restore: the guest's driver and QEMU's device both hold the
//! template's. `SIOCSIFHWADDR` on virtio-net sends the new one through the control virtqueue
//! (`VIRTIO_NET_CTRL_MAC_ADDR_SET`), which also updates QEMU's receive filter.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use agent_proto::NetConfig;

use crate::init::log;

/// The VM's NIC as the guest names it (the only virtio-net device).
pub const NIC: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bad network configuration: {0}")]
    Config(String),
    #[error("network interface {NIC} did not appear")]
    NoNic,
    #[error("{0}")]
    Sys(String, #[source] std::io::Error),
}

/// `struct rtentry` (linux/route.h) for `SIOCADDRT`; the libc crate has it only for some libcs.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// `172.16.0.5/16` -> (address, prefix length).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), NetError> {
    let bad = || NetError::Config(format!("{s:?} is not an IPv4 address with a prefix length"));
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((addr, len))
}

/// The netmask of a prefix length.
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Ipv4Addr::from(bits)
}

fn parse_mac(s: &str) -> Result<[u8; 6], NetError> {
    let bad = || NetError::Config(format!("{s:?} is not a MAC address"));
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// Bring up `lo`, and `eth0` as `net` says.
pub fn setup(net: Option<&NetConfig>) -> Result<(), NetError> {
    let ctl = control_socket()?;
    set_up("lo", ctl.as_raw_fd())?;
    let Some(net) = net else {
        return Ok(());
    };
    let (addr, prefix) = parse_cidr(&net.ip)?;
    let gateway: Option<Ipv4Addr> = match net.gateway.as_str() {
        "" => None,
        g => Some(
            g.parse()
                .map_err(|_| NetError::Config(format!("gateway {g:?} is not an IPv4 address")))?,
        ),
    };
    let t0 = Instant::now();
    wait_for_nic(Duration::from_secs(5))?;
    let fd = ctl.as_raw_fd();
    if !net.mac.is_empty() {
        let mac = parse_mac(&net.mac)?;
        let mut r = ifreq(NIC);
        // SAFETY: writing the hwaddr member of the request union.
        unsafe {
            r.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (dst, src) in r.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                *dst = src as libc::c_char;
            }
        }
        ioctl(fd, libc::SIOCSIFHWADDR, &mut r, "setting the MAC of eth0")?;
    }
    if net.mtu > 0 {
        let mut r = ifreq(NIC);
        r.ifr_ifru.ifru_mtu = net.mtu as libc::c_int;
        ioctl(fd, libc::SIOCSIFMTU, &mut r, "setting the MTU of eth0")?;
    }
    let mut r = ifreq(NIC);
    r.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(fd, libc::SIOCSIFADDR, &mut r, "setting the address of eth0")?;
    let mut r = ifreq(NIC);
    r.ifr_ifru.ifru_netmask = sockaddr_in(netmask(prefix));
    ioctl(
        fd,
        libc::SIOCSIFNETMASK,
        &mut r,
        "setting the netmask of eth0",
    )?;
    // Tenant networks are IPv4 (their namespaces on the host have IPv6 off, as Docker does on an
    // IPv4-only network): without this the guest's eth0 autoconfigures a link-local address and
    // sends duplicate-address probes, router solicitations and MLD reports onto the tenant's L2
    // for nothing, and under TCG that work costs a new VM CPU in its first seconds.
    if let Err(e) = std::fs::write(format!("/proc/sys/net/ipv6/conf/{NIC}/disable_ipv6"), "1") {
        log!("disabling IPv6 on {NIC}: {e} (carrying on)");
    }
    set_up(NIC, fd)?;
    if let Some(gw) = gateway {
        default_route(fd, gw)?;
    }
    log!(
        "network: {NIC} {} {} mtu {} gateway {} in {} ms",
        net.mac,
        net.ip,
        net.mtu,
        net.gateway,
        t0.elapsed().as_millis()
    );
    Ok(())
}

/// virtio_net is loaded at boot, so eth0 is normally there already.
fn wait_for_nic(timeout: Duration) -> Result<(), NetError> {
    let path = format!("/sys/class/net/{NIC}");
    let deadline = Instant::now() + timeout;
    while !std::path::Path::new(&path).exists() {
        if Instant::now() > deadline {
            return Err(NetError::NoNic);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn default_route(fd: RawFd, gw: Ipv4Addr) -> Result<(), NetError> {
    let mut dev = *b"eth0\0";
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gw),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_mut_ptr().cast(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    match ioctl(fd, libc::SIOCADDRT, &mut rt, "adding the default route") {
        Err(NetError::Sys(_, e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

fn set_up(name: &str, fd: RawFd) -> Result<(), NetError> {
    set_flag_up(name, fd, true)
}

fn set_flag_up(name: &str, fd: RawFd, up: bool) -> Result<(), NetError> {
    let mut r = ifreq(name);
    ioctl(
        fd,
        libc::SIOCGIFFLAGS,
        &mut r,
        &format!("reading the flags of {name}"),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    unsafe {
        if up {
            r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        } else {
            r.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
        }
    }
    ioctl(
        fd,
        libc::SIOCSIFFLAGS,
        &mut r,
        &format!("bringing {name} {}", if up { "up" } else { "down" }),
    )
}

/// Undo [`setup`] of `eth0` (for a rehearsal): down, which drops its routes, and no address
/// (setting 0.0.0.0 removes the address). The MAC and MTU are set again at every `Start`.
pub fn reset_nic() -> Result<(), NetError> {
    let ctl = control_socket()?;
    let fd = ctl.as_raw_fd();
    set_flag_up(NIC, fd, false)?;
    let mut r = ifreq(NIC);
    r.ifr_ifru.ifru_addr = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    ioctl(
        fd,
        libc::SIOCSIFADDR,
        &mut r,
        "removing the address of eth0",
    )
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes); the kernel reads the
    // family and then the sockaddr_in fields, as for any AF_INET sockaddr.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    r
}

fn ioctl<T>(fd: RawFd, req: libc::c_ulong, arg: &mut T, what: &str) -> Result<(), NetError> {
    // SAFETY: each request used here reads or writes one `T` (an ifreq or an rtentry whose
    // pointers are valid for the call) through the pointer.
    let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if r < 0 {
        return Err(NetError::Sys(what.into(), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn control_socket() -> Result<OwnedFd, NetError> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(NetError::Sys(
            "opening a control socket".into(),
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
    fn cidr_and_mask() {
        assert_eq!(
            parse_cidr("172.16.0.5/16").unwrap(),
            (Ipv4Addr::new(172, 16, 0, 5), 16)
        );
        for bad in [
            "172.16.0.5",
            "172.16.0.5/33",
            "x/8",
            "172.16.0.5/",
            "::1/64",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        assert_eq!(netmask(16), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn mac() {
        assert_eq!(
            parse_mac("02:ab:0c:00:00:ff").unwrap(),
            [2, 0xab, 0xc, 0, 0, 0xff]
        );
        assert!(parse_mac("02:ab:0c:00:00").is_err());
        assert!(parse_mac("02:ab:0c:00:00:ff:1").is_err());
    }

    #[test]
    fn sockaddr_layout() {
        let sa = sockaddr_in(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // Port (2 bytes), then the address in network order.
        assert_eq!(
            &sa.sa_data[2..6],
            &[10, 1, 2, 3].map(|b: u8| b as libc::c_char)
        );
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }
}
