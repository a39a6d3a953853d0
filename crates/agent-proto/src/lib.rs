//! The host <-> guest protocol spoken between the shim (host) and `hyper-agent` (guest PID 1)
//! over one virtio-serial port (named `agent`), exposed on the host as a unix socket.
//!
//! # Framing
//!
//! The byte stream carries frames. Each frame is a 9-byte header followed by a payload:
//!
//! ```text
//! +--------+----------------+----------------+-----------------+
//! | kind u8| stream u32 BE  |   len u32 BE   | len bytes ...   |
//! +--------+----------------+----------------+-----------------+
//! ```
//!
//! `len` is at most [`MAX_PAYLOAD`] (1 MiB); a larger value is a protocol error and the
//! connection should be dropped. A reader checks `len` before it allocates anything for the
//! payload. Kinds ([`Kind`]):
//!
//! | kind | name          | direction     | payload                                  |
//! |------|---------------|---------------|------------------------------------------|
//! | 0    | control       | both          | one JSON [`HostMsg`] / [`GuestMsg`]      |
//! | 1    | stdin         | host -> guest | raw bytes for the process's stdin        |
//! | 2    | stdout        | guest -> host | raw bytes (TTY output is stdout)         |
//! | 3    | stderr        | guest -> host | raw bytes                                |
//! | 4    | stdin EOF     | host -> guest | empty; the agent closes the stdin pipe   |
//! | 5    | window update | both          | u32 BE: credit in bytes for that stream  |
//!
//! Control frames use stream 0 and carry the stream they are about inside the JSON.
//!
//! # Streams
//!
//! Stream 0 is the main container process (started by [`HostMsg::Start`]); stream N > 0 is an
//! exec session whose id the host allocates in [`HostMsg::Exec`], or an archive stream
//! (`docker cp`, [`HostMsg::Archive`]), which behaves as one. Stream ids are not reused
//! within one VM's life.
//!
//! # Flow control
//!
//! Simple per-stream credit, in each direction, like HTTP/2 but without a connection window:
//!
//! * Output (guest -> host): for each stream the agent may send at most [`INITIAL_WINDOW`]
//!   (256 KiB) bytes of stdout+stderr payload (the two kinds share one window) before it has
//!   received more credit. The host, as it consumes (writes to the log / a client) output, sends
//!   `WindowUpdate(stream, n)` frames granting `n` more bytes. While the agent has no credit it
//!   stops reading the process's pipes, so the process blocks on write, as it would with a pipe.
//! * Input (host -> guest): symmetric. The host may send [`INITIAL_WINDOW`] bytes of stdin per
//!   stream; the agent grants more with `WindowUpdate` as it writes stdin to the process. A host
//!   that ignores stdin credit still works, the agent then buffers in memory.
//! * Window updates for an unknown or finished stream are ignored.
//!
//! # Ordering and life cycle
//!
//! 1. The agent boots, loads its modules, opens the port and sends [`GuestMsg::Ready`]. It
//!    touches no disk and no network until `Start` (VM templates). A host that (re)connects sends
//!    [`HostMsg::Hello`] and the agent answers with another `Ready`, so a host never depends on
//!    having seen the first one (e.g. after a template restore).
//! 2. `Start` -> `Started{stream:0,pid}` or `StartFailed{stream:0,..}`.
//! 3. Output frames for a stream, then exactly one `Exited` for it. The agent sends `Exited` only
//!    after all of the stream's output has been sent, so `Exited` is the end of the stream.
//! 4. `Shutdown`: the agent syncs and powers off the VM (the connection then closes).
//!
//! Exit codes are the process's code, or 128+N when killed by signal N (Docker's convention), so
//! always within [`EXIT_CODES`]; `StartFailed` uses 127 for "executable not found" and 126 for
//! "not executable".
//! Unknown JSON fields are ignored so either side may add optional fields; a breaking change
//! bumps [`PROTOCOL_VERSION`].
//!
//! # The guest is not trusted
//!
//! The guest kernel and everything in it belong to the tenant (DESIGN decision 12), so the host
//! reads this stream as hostile input: [`read_frame_or_skip`] checks the length before it
//! allocates and skips frames of kinds it does not know; the host accepts `Started` and
//! `Exited` only for streams it opened, output only within the credit it granted, and replies
//! only for requests it has outstanding (see the shim's `daemon::guest`).

use std::io;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol version carried in `Hello` and `Ready`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 9;
/// Largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Initial flow-control window per stream and direction, in bytes.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Name of the virtio-serial port the agent opens in the guest.
pub const PORT_NAME: &str = "agent";
/// Stream id of the container's main process.
pub const MAIN_STREAM: u32 = 0;
/// The `PATH` of a container whose image and command name none (Docker's default): hyperd puts
/// it first in every container's environment, and the agent looks programs up through it when
/// an environment has no `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The exit codes a process can have: 0..=255 (128+N for signal N is within it).
pub const EXIT_CODES: std::ops::RangeInclusive<i32> = 0..=255;

/// Exit code for "executable not found" (like Docker).
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code for "found but cannot be executed" (like Docker).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// Frame kind (first header byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Control = 0,
    Stdin = 1,
    Stdout = 2,
    Stderr = 3,
    StdinEof = 4,
    WindowUpdate = 5,
}

impl TryFrom<u8> for Kind {
    type Error = ProtoError;
    fn try_from(v: u8) -> Result<Self, ProtoError> {
        Ok(match v {
            0 => Kind::Control,
            1 => Kind::Stdin,
            2 => Kind::Stdout,
            3 => Kind::Stderr,
            4 => Kind::StdinEof,
            5 => Kind::WindowUpdate,
            other => return Err(ProtoError::UnknownKind(other)),
        })
    }
}

/// Protocol errors.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD} byte limit")]
    TooLarge(usize),
    #[error("window update payload must be 4 bytes, got {0}")]
    BadWindowUpdate(usize),
    #[error("expected a control frame, got {0:?}")]
    NotControl(Kind),
    #[error("bad control message")]
    Json(#[source] serde_json::Error),
}

impl From<ProtoError> for io::Error {
    fn from(e: ProtoError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// One frame of the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, stream: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            stream,
            payload,
        }
    }

    /// A control frame carrying a host message.
    pub fn host(msg: &HostMsg) -> Frame {
        Frame::new(
            Kind::Control,
            0,
            serde_json::to_vec(msg).expect("HostMsg serializes"),
        )
    }

    /// A control frame carrying a guest message.
    pub fn guest(msg: &GuestMsg) -> Frame {
        Frame::new(
            Kind::Control,
            0,
            serde_json::to_vec(msg).expect("GuestMsg serializes"),
        )
    }

    pub fn stdin(stream: u32, data: Vec<u8>) -> Frame {
        Frame::new(Kind::Stdin, stream, data)
    }
    pub fn stdout(stream: u32, data: Vec<u8>) -> Frame {
        Frame::new(Kind::Stdout, stream, data)
    }
    pub fn stderr(stream: u32, data: Vec<u8>) -> Frame {
        Frame::new(Kind::Stderr, stream, data)
    }
    pub fn stdin_eof(stream: u32) -> Frame {
        Frame::new(Kind::StdinEof, stream, Vec::new())
    }
    pub fn window_update(stream: u32, credit: u32) -> Frame {
        Frame::new(Kind::WindowUpdate, stream, credit.to_be_bytes().to_vec())
    }

    /// The credit carried by a window-update frame.
    pub fn window_credit(&self) -> Result<u32, ProtoError> {
        let b: [u8; 4] = self
            .payload
            .as_slice()
            .try_into()
            .map_err(|_| ProtoError::BadWindowUpdate(self.payload.len()))?;
        Ok(u32::from_be_bytes(b))
    }

    /// Parse a control frame sent by the host.
    pub fn host_msg(&self) -> Result<HostMsg, ProtoError> {
        if self.kind != Kind::Control {
            return Err(ProtoError::NotControl(self.kind));
        }
        serde_json::from_slice(&self.payload).map_err(ProtoError::Json)
    }

    /// Parse a control frame sent by the guest.
    pub fn guest_msg(&self) -> Result<GuestMsg, ProtoError> {
        if self.kind != Kind::Control {
            return Err(ProtoError::NotControl(self.kind));
        }
        serde_json::from_slice(&self.payload).map_err(ProtoError::Json)
    }

    /// The 9-byte header of this frame.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        encode_header(self.kind, self.stream, self.payload.len() as u32)
    }

    /// Header and payload in one buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        v.extend_from_slice(&self.header());
        v.extend_from_slice(&self.payload);
        v
    }

    /// Decode one frame from the front of `buf`. `Ok(None)` means more bytes are needed;
    /// otherwise returns the frame and how many bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtoError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let hdr: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().expect("length checked");
        let (kind, stream, len) = decode_header(&hdr)?;
        let total = HEADER_LEN + len;
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some((
            Frame::new(kind, stream, buf[HEADER_LEN..total].to_vec()),
            total,
        )))
    }
}

/// Encode a header.
pub fn encode_header(kind: Kind, stream: u32, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind as u8;
    h[1..5].copy_from_slice(&stream.to_be_bytes());
    h[5..9].copy_from_slice(&len.to_be_bytes());
    h
}

/// Decode and validate a header: (kind, stream, payload length).
pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<(Kind, u32, usize), ProtoError> {
    let (kind, stream, len) = decode_raw_header(h)?;
    Ok((Kind::try_from(kind)?, stream, len))
}

/// Decode a header whose kind may be unknown: (kind byte, stream, payload length). Only the
/// length is checked (at most [`MAX_PAYLOAD`]), so a reader can skip a frame it does not know.
pub fn decode_raw_header(h: &[u8; HEADER_LEN]) -> Result<(u8, u32, usize), ProtoError> {
    let stream = u32::from_be_bytes(h[1..5].try_into().expect("4 bytes"));
    let len = u32::from_be_bytes(h[5..9].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(ProtoError::TooLarge(len));
    }
    Ok((h[0], stream, len))
}

/// Read one frame. A clean EOF before the first header byte gives `ErrorKind::UnexpectedEof`,
/// as does a truncated frame; bad headers give `ErrorKind::InvalidData`.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> io::Result<Frame> {
    let mut hdr = [0u8; HEADER_LEN];
    r.read_exact(&mut hdr).await?;
    let (kind, stream, len) = decode_header(&hdr)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Frame {
        kind,
        stream,
        payload,
    })
}

/// What [`read_frame_or_skip`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Frame(Frame),
    /// A frame of a kind this side does not know: its payload was read and thrown away
    /// without being stored.
    Skipped {
        kind: u8,
        stream: u32,
        len: usize,
    },
}

/// Read one frame from a peer that is not trusted: the length is checked before anything is
/// allocated (a larger one is `ErrorKind::InvalidData`, after which the stream cannot be
/// resynchronised), and a frame of an unknown kind is skipped through a small fixed buffer.
/// EOF and truncation are `ErrorKind::UnexpectedEof`, as for [`read_frame`].
pub async fn read_frame_or_skip<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> io::Result<Incoming> {
    let mut hdr = [0u8; HEADER_LEN];
    r.read_exact(&mut hdr).await?;
    let (kind, stream, len) = decode_raw_header(&hdr)?;
    let Ok(kind) = Kind::try_from(kind) else {
        let mut left = len;
        let mut scratch = [0u8; 4096];
        while left > 0 {
            let n = left.min(scratch.len());
            r.read_exact(&mut scratch[..n]).await?;
            left -= n;
        }
        return Ok(Incoming::Skipped { kind, stream, len });
    };
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Incoming::Frame(Frame {
        kind,
        stream,
        payload,
    }))
}

/// Write one frame (header and payload) and flush.
pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, f: &Frame) -> io::Result<()> {
    if f.payload.len() > MAX_PAYLOAD {
        return Err(ProtoError::TooLarge(f.payload.len()).into());
    }
    w.write_all(&f.encode()).await?;
    w.flush().await
}

/// How to run one process (main or exec).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the env's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, the whole environment.
    pub env: Vec<String>,
    /// Working directory inside the container ("" = "/").
    pub cwd: String,
    /// "", "name", "uid", "uid:gid", "name:group" (resolved against the image's /etc files).
    pub user: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub tty_width: u16,
    pub tty_height: u16,
    /// Further supplementary groups (Docker's `--group-add`): numbers, or names from the
    /// image's /etc/group.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
}

/// The container's network, applied by the agent at `Start`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetConfig {
    /// MAC for `eth0`, `xx:xx:xx:xx:xx:xx` (also handed to the device's receive filter).
    pub mac: String,
    /// IPv4 address with prefix length, e.g. "172.16.0.5/16".
    pub ip: String,
    /// Default gateway ("" = no default route).
    pub gateway: String,
    /// MTU of `eth0` (0 = leave the driver's).
    pub mtu: u32,
    /// The whole `/etc/resolv.conf` ("" = leave the image's).
    pub resolv_conf: String,
    /// Extra `/etc/hosts` lines (links, `--add-host`), e.g. "172.16.0.6\tdb alias".
    pub hosts: Vec<String>,
}

/// A volume the agent mounts into the container at `Start`: a further virtio-blk disk of the
/// VM holding an ext4 file system (made by the host). The host validates `target`; the agent
/// still resolves it inside the container's root and refuses anything that leaves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeMount {
    /// The volume slot (0..[`VOLUME_SLOTS`]): the disk whose virtio-blk serial is
    /// [`volume_serial`]`(slot)`. Device names (`/dev/vdb`...) depend on probe order; the
    /// serial does not.
    pub slot: u8,
    /// Absolute path in the container, e.g. "/data".
    pub target: String,
    pub read_only: bool,
    /// Copy what the image has at `target` into the volume when the volume is empty (Docker's
    /// semantics for a new volume mounted over an image directory).
    pub copy_up: bool,
    /// The volume's size: a guest restored from a template probed the slot's placeholder at
    /// boot and learns the real capacity from a config-change interrupt, so the agent waits
    /// until the device reports this size before it mounts.
    pub size_bytes: u64,
}

/// A tmpfs the agent mounts into the container at `Start` (Docker's `--tmpfs` and `--mount
/// type=tmpfs`), in the guest's memory. The host checks the target and the options; the agent
/// still resolves the target inside the container's root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TmpfsMount {
    /// Absolute path in the container, e.g. "/run".
    pub target: String,
    /// Size limit in bytes (0: the kernel's default, half the guest's memory).
    pub size_bytes: u64,
    /// Permission bits of the tmpfs's root, e.g. 0o1777.
    pub mode: u32,
    pub read_only: bool,
    pub noexec: bool,
    pub nosuid: bool,
    pub nodev: bool,
}

/// How long the agent keeps file systems frozen without a `Thaw` (a host that died mid-snapshot
/// must not leave the container's writes blocked for ever).
pub const FREEZE_MAX_SECS: u64 = 30;

/// Volume slots in every VM's fixed device layout (Hyper's limit of volumes per container).
pub const VOLUME_SLOTS: u8 = 4;

/// The virtio-blk serial of volume slot `slot`.
pub fn volume_serial(slot: u8) -> String {
    format!("hyper-vol{slot}")
}

/// What an archive stream (`docker cp`) does; see [`HostMsg::Archive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveOp {
    /// Only the stat line.
    Stat,
    /// The stat line, then a tar of the path.
    Get,
    /// The stat line of the directory, then extract the tar read from stdin into it.
    Put,
    /// The stat line of `/`, then a tar of the container's root file system alone (Docker's
    /// `export`: the volumes mounted in it are left out, their mount points kept empty).
    Export,
    /// The stat line of `/`, then one [`FileMeta`] JSON line per entry of the root file system
    /// alone (for Docker's `changes`, compared with the image's on the host).
    Manifest,
}

/// What `changes` compares of one file: a line of a manifest (the guest's, or the one the host
/// makes of an image's tree).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileMeta {
    /// Absolute, e.g. "/etc/passwd".
    pub path: String,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    /// A symlink's target.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub link: String,
}

impl FileMeta {
    /// `path`'s metadata (not following a symlink).
    pub fn of(path: &str, md: &std::fs::Metadata, link: String) -> FileMeta {
        use std::os::unix::fs::MetadataExt;
        FileMeta {
            path: path.to_string(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime: md.mtime(),
            link,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }

    /// Docker's test for a changed file: type, permissions, owners, and for a non-directory
    /// its size, modification time (seconds) and link target too.
    pub fn changed_from(&self, before: &FileMeta) -> bool {
        self.mode != before.mode
            || self.uid != before.uid
            || self.gid != before.gid
            || (!self.is_dir()
                && (self.size != before.size
                    || self.mtime != before.mtime
                    || self.link != before.link))
    }
}

/// Walk the tree at `root` on its own file system (mount points below it are listed, not
/// entered), calling `f` with each entry's path relative to `root` as an absolute path
/// ("/etc/passwd") and its metadata. Never follows a symlink.
pub fn walk_tree(
    root: &std::path::Path,
    f: &mut dyn FnMut(FileMeta) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::symlink_metadata(root)?.dev();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for name in names.into_iter().rev() {
            let path = dir.join(&name);
            let child = format!("{rel}/{}", name.to_string_lossy());
            let md = std::fs::symlink_metadata(&path)?;
            let link = if md.file_type().is_symlink() {
                std::fs::read_link(&path)?.to_string_lossy().into_owned()
            } else {
                String::new()
            };
            f(FileMeta::of(&child, &md, link))?;
            if md.is_dir() && md.dev() == dev {
                stack.push((path, child));
            }
        }
    }
    Ok(())
}

/// An archive stream's request: the path is resolved inside the container's root (a helper
/// chrooted there), so neither `..` nor a symlink leaves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRequest {
    pub op: ArchiveOp,
    /// Path in the container (relative paths are taken from `/`, as Docker does).
    pub path: String,
    /// Put: refuse to replace a directory with a non-directory or the other way round.
    #[serde(default)]
    pub no_overwrite_dir_non_dir: bool,
    /// Put: own every extracted entry by this user (resolved against the container's
    /// `/etc/passwd` and `/etc/group`, as a process's `user`) instead of the tar's owners.
    #[serde(default)]
    pub chown_user: String,
    /// Export and Manifest: stop every process of the guest but the agent (`SIGSTOP`) while
    /// the file system is read, and continue them after (`docker commit --pause`, the default).
    #[serde(default)]
    pub freeze: bool,
}

/// The first line an archive stream writes on stdout (JSON, then `\n`): what the path is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PathStat {
    pub name: String,
    pub size: u64,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    pub mtime_secs: i64,
    pub mtime_nsecs: u32,
    /// For a symlink: its target resolved inside the container's root, else "".
    pub link_target: String,
}

/// Exit codes of an archive stream that the host maps to Docker's statuses.
pub const ARCHIVE_NOT_FOUND: i32 = 2;
pub const ARCHIVE_NOT_A_DIRECTORY: i32 = 20;
pub const ARCHIVE_INVALID: i32 = 22;
/// Largest stat line an archive stream may write.
pub const MAX_STAT_LINE: usize = 16 * 1024;

/// Host -> guest control messages.
// `Start` is much larger than the rest; messages are built one at a time, so boxing would buy
// nothing but indirection.
/// What a `Start` carries (and a `Rehearse`, the same start on a standby's scratch disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSpec {
    pub process: ProcessSpec,
    pub hostname: String,
    /// The guest device of the root disk, normally "/dev/vda".
    pub root_device: String,
    /// Host randomness the agent credits to the kernel's pool and reseeds the CRNG from
    /// (RNDADDENTROPY + RNDRESEEDCRNG). Empty: leave the pool alone.
    #[serde(default)]
    pub entropy: Vec<u8>,
    /// The host's CLOCK_REALTIME when it sent `Start`, in ns since the epoch (0: leave the
    /// guest clock alone).
    #[serde(default)]
    pub realtime_ns: u64,
    /// 32 hex digits written to the image's `/etc/machine-id` when the image has that file.
    #[serde(default)]
    pub machine_id: String,
    /// The container's network on the VM's one NIC (`eth0`). `None`: no network (Docker's
    /// `--network none`), only `lo` comes up. Applied at `Start`, never before: a guest
    /// restored from a template has the template's MAC until then.
    #[serde(default)]
    pub network: Option<NetConfig>,
    /// Volumes mounted after the root, in this order.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Tmpfs mounts, after the volumes, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    /// The root disk behind the slot is the one `PrepareRoot` mounted read-only: the agent
    /// remounts it read-write instead of mounting it afresh. False (or absent): whatever a
    /// `PrepareRoot` mounted is unmounted first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root_mounted: bool,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMsg {
    /// Sent on (re)connect; the agent answers with `Ready`.
    Hello {
        version: u32,
        /// Host randomness the agent credits to the kernel's pool (as `Start`'s). The template
        /// builder sends some, so that the kernel's CRNG is ready in the template: otherwise
        /// every VM restored from it would turn it ready at its `Start` (a static key: kernel
        /// text patched, which under TCG throws away translated code). Each `Start` still
        /// reseeds with its own.
        #[serde(default)]
        entropy: Vec<u8>,
    },
    /// Renew the guest's identity, mount the root disk, set the hostname and start the main
    /// process (stream 0). A guest restored from a VM template shares its clock and random
    /// state with every sibling until this message: the agent applies `realtime_ns` and
    /// `entropy` before anything else.
    Start(StartSpec),
    /// Start an exec session in the running container on `stream` (> 0, allocated by the host).
    Exec { stream: u32, process: ProcessSpec },
    /// Send `signal` to the process of `stream`.
    Signal { stream: u32, signal: i32 },
    /// Resize the TTY of `stream`.
    Resize {
        stream: u32,
        width: u16,
        height: u16,
    },
    /// List the container's processes.
    Top {
        req_id: u64,
        #[serde(default)]
        ps_args: String,
    },
    /// Resource usage.
    Stats { req_id: u64 },
    /// Set the guest's CLOCK_REALTIME to the host's (ns since the epoch), sent after the VM was
    /// resumed from a pause: its clock stood still meanwhile. No answer.
    SetClock { realtime_ns: u64 },
    /// Start an archive stream (`docker cp`) on `stream` (> 0, allocated by the host), in
    /// the container's root as mounted in the agent (volumes included). It behaves as an exec
    /// session: `Started`/`StartFailed`, stdout (the stat line, then for `Get` the tar), stdin
    /// (for `Put` the tar), stderr (an error text), and `Exited` with 0 or an `ARCHIVE_*`
    /// code.
    Archive {
        stream: u32,
        request: ArchiveRequest,
    },
    /// A helper VM for a stopped container: mount its root disk and volumes as `Start` would,
    /// but start no process (archive streams follow). Answered with `Done` (or `Error`).
    Mount {
        req_id: u64,
        root_device: String,
        #[serde(default)]
        volumes: Vec<VolumeMount>,
    },
    /// sync() and power off the VM.
    Shutdown,
    /// Freeze (FIFREEZE) the file systems mounted at these container paths, so that the host
    /// can copy their disks consistently; answered with `Done` (or `Error`). A freeze the host
    /// does not end with `Thaw` is ended by the agent after [`FREEZE_MAX_SECS`].
    Freeze { req_id: u64, targets: Vec<String> },
    /// Thaw (FITHAW) what `Freeze` froze; answered with `Done` (or `Error`).
    Thaw { req_id: u64, targets: Vec<String> },
    /// To a standby VM, before any container has it: walk the path of a `Start` once on the
    /// standby's scratch disk (identity, network, mount, spawn `process` in its own namespaces,
    /// relay its output and wait for it, unmount), leaving nothing behind, so that the guest
    /// code a real `Start` runs is warm (under TCG a first run of any code costs its
    /// translation), its decoding included: hence a `Start`'s own fields. Volumes and tmpfs
    /// mounts are not rehearsed, and the hostname and network are the VM's again afterwards.
    /// Answered with `Rehearsed`.
    Rehearse(StartSpec),
    /// To a standby VM prepared for one image, after its rehearsal and before any container has
    /// it: mount the root disk now behind the slot (a pristine copy of the image's empty
    /// overlay) read-only, look up `process`'s user and program as a `Start` would, and read
    /// the program (and its ELF interpreter) into the page cache, at most `preread_max` bytes.
    /// Nothing is written and no program of the image runs. Answered with `Prepared`.
    PrepareRoot {
        root_device: String,
        /// Only `args[0]`, `PATH` in `env`, `cwd`, `user` and `group_add` are read.
        process: ProcessSpec,
        preread_max: u64,
    },
}

/// Guest -> host control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMsg {
    /// A `Rehearse` is over: `error` is empty when every step worked.
    Rehearsed { millis: u64, error: String },
    /// A `PrepareRoot` is over: `error` is empty when the root is mounted read-only; `bytes`
    /// were read ahead.
    Prepared {
        millis: u64,
        bytes: u64,
        error: String,
    },
    /// The agent has loaded its modules and opened the port (also the reply to `Hello`).
    Ready {
        version: u32,
        kernel_release: String,
    },
    /// The process of `stream` is running (guest-global pid).
    Started { stream: u32, pid: i32 },
    /// The process of `stream` could not be started; no `Exited` follows.
    StartFailed {
        stream: u32,
        error: String,
        exit_code: i32,
    },
    /// The process of `stream` has exited and all its output has been sent.
    Exited {
        stream: u32,
        exit_code: i32,
        #[serde(default)]
        oom_killed: bool,
    },
    TopReply {
        req_id: u64,
        titles: Vec<String>,
        processes: Vec<Vec<String>>,
    },
    StatsReply {
        req_id: u64,
        memory_usage: u64,
        memory_limit: u64,
        cpu_total_ns: u64,
        system_cpu_ns: u64,
        online_cpus: u32,
        pids: u64,
    },
    /// A request failed (`req_id` 0 when the error belongs to no request, e.g. a failed Start
    /// mount is reported as `StartFailed` instead).
    Error { req_id: u64, message: String },
    /// A request with nothing to report but success (`Freeze`, `Thaw`).
    Done { req_id: u64 },
    /// The answer to `Shutdown`: every disk is synced, so the host may stop the VM at once
    /// instead of waiting for the guest's own power-off.
    Synced,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProcessSpec {
        ProcessSpec {
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: "1000:1000".into(),
            tty: true,
            open_stdin: true,
            tty_width: 80,
            tty_height: 24,
            group_add: vec!["audio".into(), "1001".into()],
        }
    }

    #[test]
    fn header_layout() {
        let f = Frame::stdout(0x01020304, b"abc".to_vec());
        assert_eq!(
            f.encode(),
            vec![2, 1, 2, 3, 4, 0, 0, 0, 3, b'a', b'b', b'c']
        );
    }

    #[test]
    fn control_round_trips() {
        let host = [
            HostMsg::Hello {
                version: PROTOCOL_VERSION,
                entropy: vec![1, 2, 3],
            },
            HostMsg::Start(StartSpec {
                process: spec(),
                hostname: "abc".into(),
                root_device: "/dev/vda".into(),
                entropy: vec![1, 2, 255],
                realtime_ns: 1_700_000_000_000_000_000,
                machine_id: "0123456789abcdef0123456789abcdef".into(),
                network: Some(NetConfig {
                    mac: "02:42:ac:10:00:05".into(),
                    ip: "172.16.0.5/16".into(),
                    gateway: "172.16.0.1".into(),
                    mtu: 1450,
                    resolv_conf: "nameserver 172.16.0.1\n".into(),
                    hosts: vec!["172.16.0.6\tdb".into()],
                }),
                volumes: vec![VolumeMount {
                    slot: 2,
                    target: "/data".into(),
                    read_only: true,
                    copy_up: false,
                    size_bytes: 10 << 30,
                }],
                tmpfs: vec![TmpfsMount {
                    target: "/run".into(),
                    size_bytes: 64 << 20,
                    mode: 0o1777,
                    read_only: false,
                    noexec: true,
                    nosuid: true,
                    nodev: true,
                }],
                root_mounted: true,
            }),
            HostMsg::Rehearse(StartSpec {
                process: spec(),
                hostname: "scratch".into(),
                root_device: "/dev/vda".into(),
                entropy: vec![7],
                realtime_ns: 1,
                machine_id: "0".repeat(32),
                network: None,
                volumes: Vec::new(),
                tmpfs: Vec::new(),
                root_mounted: false,
            }),
            HostMsg::PrepareRoot {
                root_device: "/dev/vda".into(),
                process: spec(),
                preread_max: 32 << 20,
            },
            HostMsg::Freeze {
                req_id: 9,
                targets: vec!["/data".into()],
            },
            HostMsg::Thaw {
                req_id: 10,
                targets: vec!["/data".into()],
            },
            HostMsg::Exec {
                stream: 3,
                process: spec(),
            },
            HostMsg::Signal {
                stream: 0,
                signal: 15,
            },
            HostMsg::Resize {
                stream: 2,
                width: 100,
                height: 40,
            },
            HostMsg::Top {
                req_id: 7,
                ps_args: "-ef".into(),
            },
            HostMsg::Stats { req_id: 8 },
            HostMsg::Archive {
                stream: 4,
                request: ArchiveRequest {
                    op: ArchiveOp::Put,
                    path: "/tmp".into(),
                    no_overwrite_dir_non_dir: true,
                    chown_user: "1000:1000".into(),
                    freeze: false,
                },
            },
            HostMsg::Mount {
                req_id: 11,
                root_device: "/dev/vda".into(),
                volumes: vec![],
            },
            HostMsg::Shutdown,
        ];
        for (i, m) in host.iter().enumerate() {
            let bytes = Frame::host(m).encode();
            let (f, used) = Frame::decode(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len(), "test[{i}]");
            assert_eq!(&f.host_msg().unwrap(), m, "test[{i}]");
        }
        let guest = [
            GuestMsg::Done { req_id: 9 },
            GuestMsg::Prepared {
                millis: 12,
                bytes: 1 << 20,
                error: String::new(),
            },
            GuestMsg::Ready {
                version: 1,
                kernel_release: "6.1".into(),
            },
            GuestMsg::Started { stream: 0, pid: 42 },
            GuestMsg::StartFailed {
                stream: 1,
                error: "nope".into(),
                exit_code: 127,
            },
            GuestMsg::Exited {
                stream: 0,
                exit_code: 137,
                oom_killed: true,
            },
            GuestMsg::TopReply {
                req_id: 1,
                titles: vec!["PID".into()],
                processes: vec![vec!["1".into()]],
            },
            GuestMsg::StatsReply {
                req_id: 2,
                memory_usage: 1,
                memory_limit: 2,
                cpu_total_ns: 3,
                system_cpu_ns: 4,
                online_cpus: 1,
                pids: 5,
            },
            GuestMsg::Error {
                req_id: 3,
                message: "x".into(),
            },
        ];
        for (i, m) in guest.iter().enumerate() {
            let bytes = Frame::guest(m).encode();
            let (f, _) = Frame::decode(&bytes).unwrap().unwrap();
            assert_eq!(&f.guest_msg().unwrap(), m, "test[{i}]");
        }
    }

    #[test]
    fn json_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&Frame::host(&HostMsg::Shutdown).payload).unwrap();
        assert_eq!(v["type"], "shutdown");
        // Missing optional fields default; unknown fields are ignored.
        let m: HostMsg = serde_json::from_str(
            r#"{"type":"exec","stream":1,"process":{"args":["ls"]},"extra":1}"#,
        )
        .unwrap();
        match m {
            HostMsg::Exec { stream: 1, process } => assert_eq!(process.args, vec!["ls"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_from_an_older_host() {
        // A host that predates identity renewal omits the new fields.
        let m: HostMsg = serde_json::from_str(
            r#"{"type":"start","process":{"args":["sh"]},"hostname":"h","root_device":""}"#,
        )
        .unwrap();
        match m {
            HostMsg::Start(StartSpec {
                entropy,
                realtime_ns,
                machine_id,
                network,
                ..
            }) => assert!(
                entropy.is_empty()
                    && realtime_ns == 0
                    && machine_id.is_empty()
                    && network.is_none()
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn net_config_defaults() {
        let n: NetConfig = serde_json::from_str(r#"{"ip":"10.0.0.2/24"}"#).unwrap();
        assert_eq!(
            n,
            NetConfig {
                ip: "10.0.0.2/24".into(),
                ..Default::default()
            }
        );
        let m: HostMsg = serde_json::from_str(
            r#"{"type":"start","process":{},"hostname":"h","root_device":"","network":null}"#,
        )
        .unwrap();
        assert!(matches!(m, HostMsg::Start(StartSpec { network: None, .. })));
    }

    #[test]
    fn window_update() {
        let f = Frame::window_update(5, 4096);
        assert_eq!(f.window_credit().unwrap(), 4096);
        assert!(Frame::new(Kind::WindowUpdate, 5, vec![1, 2])
            .window_credit()
            .is_err());
    }

    #[test]
    fn decode_incremental_and_bad_input() {
        let bytes = Frame::stderr(1, vec![9; 10]).encode();
        for n in 0..bytes.len() {
            assert!(
                Frame::decode(&bytes[..n]).unwrap().is_none(),
                "truncated at {n}"
            );
        }
        let mut bad = bytes.clone();
        bad[0] = 6;
        assert!(matches!(
            Frame::decode(&bad),
            Err(ProtoError::UnknownKind(6))
        ));
        let big = encode_header(Kind::Stdout, 0, MAX_PAYLOAD as u32 + 1);
        assert!(matches!(Frame::decode(&big), Err(ProtoError::TooLarge(_))));
        let max = encode_header(Kind::Stdout, 0, MAX_PAYLOAD as u32);
        assert!(Frame::decode(&max).unwrap().is_none());
        assert!(Frame::stdout(0, vec![]).host_msg().is_err());
        assert!(Frame::new(Kind::Control, 0, b"{".to_vec())
            .guest_msg()
            .is_err());
    }

    #[tokio::test]
    async fn async_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let frames = vec![
            Frame::host(&HostMsg::Stats { req_id: 1 }),
            Frame::stdin(1, vec![7; 1000]),
            Frame::stdin_eof(1),
        ];
        let f2 = frames.clone();
        let w = tokio::spawn(async move {
            for f in &f2 {
                write_frame(&mut a, f).await.unwrap();
            }
        });
        for f in &frames {
            assert_eq!(&read_frame(&mut b).await.unwrap(), f);
        }
        w.await.unwrap();
        // The writer is gone: EOF.
        assert_eq!(
            read_frame(&mut b).await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[tokio::test]
    async fn async_bad_input() {
        let mut big: &[u8] = &encode_header(Kind::Stdout, 0, u32::MAX);
        assert_eq!(
            read_frame(&mut big).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut truncated: &[u8] = &Frame::stdout(0, vec![1; 8]).encode()[..12];
        assert_eq!(
            read_frame(&mut truncated).await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut short_hdr: &[u8] = &[2, 0, 0];
        assert_eq!(
            read_frame(&mut short_hdr).await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let oversized = Frame::stdout(0, vec![0; MAX_PAYLOAD + 1]);
        let mut sink = Vec::new();
        assert!(write_frame(&mut sink, &oversized).await.is_err());
    }

    #[tokio::test]
    async fn untrusted_reader() {
        // An unknown kind is skipped (payload consumed, nothing kept); the next frame is read.
        let mut bytes = encode_header_raw(200, 7, 10_000).to_vec();
        bytes.extend(vec![0xAB; 10_000]);
        bytes.extend(Frame::stdout(1, b"ok".to_vec()).encode());
        let mut r: &[u8] = &bytes;
        assert_eq!(
            read_frame_or_skip(&mut r).await.unwrap(),
            Incoming::Skipped {
                kind: 200,
                stream: 7,
                len: 10_000
            }
        );
        assert_eq!(
            read_frame_or_skip(&mut r).await.unwrap(),
            Incoming::Frame(Frame::stdout(1, b"ok".to_vec()))
        );
        // A length over the limit fails before any payload is read, for any kind.
        for (i, kind) in [2u8, 200].into_iter().enumerate() {
            let hdr = encode_header_raw(kind, 0, u32::MAX);
            let mut r: &[u8] = &hdr;
            let e = read_frame_or_skip(&mut r).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "test[{i}]");
        }
        // A truncated unknown frame is EOF, not a frame.
        let hdr = encode_header_raw(99, 0, 100);
        let mut r: &[u8] = &[&hdr[..], &[0u8; 10][..]].concat();
        assert_eq!(
            read_frame_or_skip(&mut r).await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    fn encode_header_raw(kind: u8, stream: u32, len: u32) -> [u8; HEADER_LEN] {
        let mut h = encode_header(Kind::Control, stream, len);
        h[0] = kind;
        h
    }
}
