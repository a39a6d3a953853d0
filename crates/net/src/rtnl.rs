//! The one rtnetlink request on a start's path: moving a link into another network namespace
//! under a new name (what `ip link set dev OLD netns NS name NEW` sends), without spawning a
//! process for it (a claim of a standby VM moves its tap so; under a burst of starts the `ip`
//! process cost each ~4 ms of CPU).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// `struct nlmsghdr` and `struct ifinfomsg`: 16 bytes each.
const NLMSG_HEADER: usize = 16;
const IFINFOMSG: usize = 16;

/// Moves the link `old` of the calling thread's network namespace into the namespace open at
/// `target`, renamed `new`.
pub fn move_link(old: &str, target: BorrowedFd<'_>, new: &str) -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex(old)?;
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    const SEQ: u32 = 1;
    let request = move_request(index, target.as_raw_fd() as u32, new, SEQ);
    sendto(
        sock.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut reply = [0u8; 512];
    let n = recv(sock.as_raw_fd(), &mut reply, MsgFlags::empty())?;
    ack_of(&reply[..n], SEQ)
}

/// `RTM_NEWLINK` of request `seq` for the link `index`: into the namespace open at descriptor
/// `netns_fd`, named `name`; the kernel acknowledges it.
fn move_request(index: u32, netns_fd: u32, name: &str, seq: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    push_attr(&mut attrs, libc::IFLA_NET_NS_FD, &netns_fd.to_ne_bytes());
    push_attr(
        &mut attrs,
        libc::IFLA_IFNAME,
        &[name.as_bytes(), &[0]].concat(),
    );
    let len = NLMSG_HEADER + IFINFOMSG + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend((len as u32).to_ne_bytes());
    m.extend(libc::RTM_NEWLINK.to_ne_bytes());
    m.extend(((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m.extend(seq.to_ne_bytes());
    // The sender's port id: 0 lets the kernel assign it.
    m.extend(0u32.to_ne_bytes());
    // ifinfomsg: family, padding, type, index, flags, change.
    m.extend([libc::AF_UNSPEC as u8, 0]);
    m.extend(0u16.to_ne_bytes());
    m.extend(index.to_ne_bytes());
    m.extend(0u32.to_ne_bytes());
    m.extend(0u32.to_ne_bytes());
    m.extend(attrs);
    m
}

/// A route attribute `kind` holding `value`, padded to 4 bytes.
fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend((len as u16).to_ne_bytes());
    buf.extend(kind.to_ne_bytes());
    buf.extend(value);
    buf.resize(buf.len() + len.next_multiple_of(4) - len, 0);
}

/// What the kernel's `reply` to request `seq` says: its acknowledgement, or the error it gave.
fn ack_of(reply: &[u8], seq: u32) -> io::Result<()> {
    let field = |at: usize| -> Option<[u8; 4]> { reply.get(at..at + 4)?.try_into().ok() };
    let (Some(kind), Some(reply_seq), Some(error)) = (field(4), field(8), field(NLMSG_HEADER))
    else {
        return Err(io::Error::other("a short rtnetlink reply"));
    };
    let kind = u16::from_ne_bytes([kind[0], kind[1]]);
    if kind != libc::NLMSG_ERROR as u16 || u32::from_ne_bytes(reply_seq) != seq {
        return Err(io::Error::other("an rtnetlink reply to another request"));
    }
    match i32::from_ne_bytes(error) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e.saturating_neg())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_request_is_rtm_newlink_with_the_namespace_and_the_name() {
        let m = move_request(7, 9, "tap-ab", 1);
        assert_eq!(m.len(), 16 + 16 + 8 + 12);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), libc::RTM_NEWLINK);
        // Acknowledged: without NLM_F_ACK a success gets no reply, and the wait for it never
        // ends.
        let flags = u16::from_ne_bytes([m[6], m[7]]);
        assert_eq!(flags, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        // IFLA_NET_NS_FD 9, then IFLA_IFNAME "tap-ab\0" padded to 8 bytes.
        assert_eq!(u16::from_ne_bytes([m[32], m[33]]), 8);
        assert_eq!(u16::from_ne_bytes([m[34], m[35]]), libc::IFLA_NET_NS_FD);
        assert_eq!(u32::from_ne_bytes(m[36..40].try_into().unwrap()), 9);
        assert_eq!(u16::from_ne_bytes([m[40], m[41]]), 11);
        assert_eq!(u16::from_ne_bytes([m[42], m[43]]), libc::IFLA_IFNAME);
        assert_eq!(&m[44..], b"tap-ab\0\0");
    }

    /// A reply as the kernel writes it: a header, then the error (0 for an acknowledgement).
    fn reply(kind: u16, seq: u32, error: i32) -> Vec<u8> {
        let mut r = vec![0u8; 36];
        r[4..6].copy_from_slice(&kind.to_ne_bytes());
        r[8..12].copy_from_slice(&seq.to_ne_bytes());
        r[16..20].copy_from_slice(&error.to_ne_bytes());
        r
    }

    #[test]
    fn replies_give_the_ack_or_the_kernels_error() {
        let error = libc::NLMSG_ERROR as u16;
        assert!(ack_of(&reply(error, 1, 0), 1).is_ok());
        let e = ack_of(&reply(error, 1, -libc::EEXIST), 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert!(ack_of(&reply(error, 2, 0), 1).is_err());
        assert!(ack_of(&reply(libc::RTM_NEWLINK, 1, 0), 1).is_err());
        assert!(ack_of(&reply(error, 1, 0)[..18], 1).is_err());
        assert!(ack_of(&reply(error, 1, i32::MIN), 1).is_err());
    }
}
