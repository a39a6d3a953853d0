use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `DIR/spec.json`, written by hyperd before launching the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    #[serde(default = "default_qemu")]
    pub qemu: PathBuf,
    /// "kvm", "tcg" or "auto"/"" (detect).
    #[serde(default)]
    pub accel: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    #[serde(default)]
    pub kernel_cmdline_extra: String,
    #[serde(default = "one")]
    pub vcpus: u32,
    #[serde(default = "default_mem")]
    pub memory_mib: u64,
    pub root_disk: PathBuf,
    /// Unprivileged user QEMU runs as; "" keeps root (tests).
    #[serde(default)]
    pub run_as: String,
    #[serde(default = "default_boot_timeout")]
    pub boot_timeout_secs: u64,
    #[serde(default = "default_log_max")]
    pub log_max_bytes: u64,
    #[serde(default = "default_log_files")]
    pub log_max_files: u32,
    #[serde(default)]
    pub hostname: String,
    pub process: ProcessSpec,
    /// Where VM templates live (`DATA/templates`). Set: restore this VM from the template for
    /// its (QEMU, kernel, initramfs, command line, size), building the template first when there
    /// is none; boot cold when that fails (the reason goes to shim.log). Unset: boot cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_dir: Option<PathBuf>,
    /// The container's network. `None` is Docker's `--network none`: the VM still has its NIC
    /// (the device layout is fixed, so templates fit), on a tap in a private namespace of the
    /// shim's own where nothing is reachable, and the guest brings up only `lo`.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
    /// A standby VM (see `shim::standby`): restore it from the template behind a scratch disk
    /// and a private tap, rehearse a start, then wait (paused) on `shim.sock` for a container to
    /// claim it. `id`, `process`, `hostname`, `root_disk` and `volumes` are not used (a claim
    /// attaches the container's volumes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
    /// A standby prepared for one tenant's containers of one image (see `shim::standby`):
    /// after its rehearsal it takes a copy of the image's empty overlay as its root disk and
    /// has the agent mount it read-only and read ahead what a start reads. Only a container
    /// whose root disk is still byte-equal to that copy can claim it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_for: Option<PrepareSpec>,
    /// A short-lived VM that serves a stopped container's archive streams (`Mount`, then
    /// `Archive`): its disk is the container's, its state file is its own, and `Shutdown`
    /// syncs the guest's disks before QEMU goes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub helper: bool,
    /// The container's root disk is deleted when its process ends (`--rm`): nothing reads it
    /// again, so without volumes its end does not wait for the guest to sync it (tens of ms
    /// under TCG) and QEMU is stopped at once. With volumes, or after a stop that keeps the
    /// disk (`restart`), it is synced all the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disposable: bool,
    /// Volumes, each in its own slot of the device layout (at most
    /// [`agent_proto::VOLUME_SLOTS`], slots distinct); the slots not listed hold an empty
    /// placeholder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// Tmpfs mounts the agent makes in the guest's memory at `Start`, after the volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<agent_proto::TmpfsMount>,
}

/// What a standby is prepared for ([`Spec::prepared_for`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareSpec {
    /// The tenant whose containers may claim it (hyperd's bookkeeping; the supervisor only
    /// compares disks).
    pub tenant: String,
    /// The image (hyperd's bookkeeping).
    pub image_id: String,
    /// The image's empty overlay, copied as the standby's root disk.
    pub overlay_template: PathBuf,
    /// The start to walk: only `args[0]`, `PATH`, `cwd`, `user` and `group_add` are used.
    pub process: ProcessSpec,
    /// The most bytes of the program and its interpreter read ahead.
    pub preread_max: u64,
}

impl PrepareSpec {
    /// Who may claim a standby prepared so: (tenant, image).
    pub fn key(&self) -> (String, String) {
        (self.tenant.clone(), self.image_id.clone())
    }
}

/// One volume of the container: where its disk is and how the agent mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub disk: VolumeDisk,
    /// What the agent is told (slot, target, read-only, copy-up, size).
    pub mount: agent_proto::VolumeMount,
}

/// Where a volume's blocks are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "snake_case")]
pub enum VolumeDisk {
    /// A raw file holding ext4 (sparse; discard frees its blocks), opened by the shim and
    /// handed to QEMU as a descriptor.
    Local { path: PathBuf },
    /// A Ceph RBD image QEMU opens itself with its `rbd` driver (from `qemu-block-extra`),
    /// as the Ceph user `user` whose key is `key` (base64, handed to QEMU as a secret object,
    /// never on its command line), reaching the cluster at `monitors` (`host:port`, msgr2). No
    /// `ceph.conf` is read: QEMU is chrooted.
    Rbd {
        pool: String,
        image: String,
        user: String,
        key: String,
        monitors: Vec<String>,
    },
}

/// Where the VM's NIC plugs in and what the guest configures on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The tenant's network namespace (bind-mount path; created by hyperd).
    pub netns: PathBuf,
    /// Bridge in that namespace the tap is enslaved to, e.g. "br0".
    pub bridge: String,
    /// Tap name, "tap" + 12 hex (at most 15 bytes).
    pub tap: String,
    /// The guest's MAC, "02:xx:xx:xx:xx:xx".
    pub mac: String,
    /// The guest's address with prefix length, e.g. "172.16.0.5/16".
    pub ip: String,
    /// Default gateway, e.g. "172.16.0.1".
    pub gateway: String,
    pub mtu: u32,
    /// Full content of the container's /etc/resolv.conf ("" = leave the image's).
    #[serde(default)]
    pub resolv_conf: String,
    /// Extra /etc/hosts lines (links, --add-host), e.g. "172.16.0.6\tdb alias".
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl NetworkSpec {
    pub fn to_agent(&self) -> agent_proto::NetConfig {
        agent_proto::NetConfig {
            mac: self.mac.clone(),
            ip: self.ip.clone(),
            gateway: self.gateway.clone(),
            mtu: self.mtu,
            resolv_conf: self.resolv_conf.clone(),
            hosts: self.hosts.clone(),
        }
    }
}

fn default_qemu() -> PathBuf {
    "/usr/bin/qemu-system-x86_64".into()
}
fn one() -> u32 {
    1
}
fn default_mem() -> u64 {
    512
}
fn default_boot_timeout() -> u64 {
    60
}
fn default_log_max() -> u64 {
    10 * 1024 * 1024
}
fn default_log_files() -> u32 {
    3
}

/// The container's main process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub tty_width: u16,
    pub tty_height: u16,
    /// Docker's `--group-add`, for the main process and every exec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
}

impl ProcessSpec {
    pub fn to_agent(&self) -> agent_proto::ProcessSpec {
        agent_proto::ProcessSpec {
            args: self.args.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            tty: self.tty,
            open_stdin: self.open_stdin,
            tty_width: self.tty_width,
            tty_height: self.tty_height,
            group_add: self.group_add.clone(),
        }
    }
}

impl Spec {
    /// Whether the disk goes with the container (`disposable`, no volumes): its end need not
    /// sync it, unless a stop kept it (the supervisor's `DiskFate`).
    pub fn disk_goes_at_end(&self) -> bool {
        self.disposable && self.volumes.is_empty()
    }

    pub fn load(dir: &Path) -> io::Result<Spec> {
        let path = dir.join(crate::paths::SPEC);
        let data = std::fs::read(&path)?;
        serde_json::from_slice(&data).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Booting,
    Ready,
    Running,
    Exited,
}

/// `DIR/state.json`, written atomically by the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct State {
    pub status: Status,
    pub shim_pid: u32,
    pub qemu_pid: Option<u32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub error: String,
    /// The VM is stopped (QEMU's run state, read again on every `State` request).
    #[serde(default)]
    pub paused: bool,
    /// QEMU paused the VM because a disk write failed for lack of space on the host; it
    /// resumes when there is room again (`crate::disk_full`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disk_full: bool,
}

impl State {
    pub fn load(dir: &Path) -> io::Result<State> {
        let data = std::fs::read(dir.join(crate::paths::STATE))?;
        serde_json::from_slice(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Write to a temp file, fsync, rename over `state.json`.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        use std::io::Write;
        let tmp = dir.join(".state.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("state serializes"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(crate::paths::STATE))
    }
}

/// One JSON line on `shim.sock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// To a standby VM's shim: become the supervisor of the container whose directory (with its
    /// `spec.json` and `root.qcow2`) is `dir`. On success the standby's directory has replaced
    /// `dir` (its files moved in), and this socket is `dir/shim.sock`.
    Claim {
        dir: PathBuf,
    },
    Start,
    Attach {
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        stdout: bool,
        #[serde(default)]
        stderr: bool,
    },
    Exec {
        exec_id: String,
        args: Vec<String>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        cwd: String,
        #[serde(default)]
        user: String,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        tty_width: u16,
        #[serde(default)]
        tty_height: u16,
    },
    Signal {
        signal: i32,
        #[serde(default)]
        exec_id: Option<String>,
        /// Resume a paused VM once the signal is queued, so it is delivered (Docker does this
        /// for the stop signal and SIGKILL).
        #[serde(default)]
        resume: bool,
    },
    Resize {
        width: u16,
        height: u16,
        #[serde(default)]
        exec_id: Option<String>,
    },
    Stop {
        #[serde(default = "sigterm")]
        signal: i32,
        #[serde(default = "ten")]
        timeout_secs: u64,
        /// A start follows (`restart`): the guest syncs its disk even when the container is
        /// disposable.
        #[serde(default)]
        keep_disk: bool,
    },
    Wait,
    State,
    Top {
        #[serde(default)]
        ps_args: String,
    },
    Stats,
    /// Freeze the whole VM (`docker pause`): QMP `stop`.
    Pause,
    /// Undo `Pause`: QMP `cont`.
    Resume,
    Shutdown,
    /// An archive stream (`docker cp`, see `HostMsg::Archive`): answered like `Exec` (a reply
    /// line, then Docker multiplexed frames: stdout, stderr, and the exit frame); for `put`
    /// the connection's further bytes are its stdin (the tar), ended by shutting down the
    /// write half.
    Archive {
        request: agent_proto::ArchiveRequest,
    },
    /// A helper VM (`Spec::helper`): mount the container's root disk and volumes, start no
    /// process; archive streams may follow.
    Mount,
    /// Freeze the file systems of these volume targets in the guest (see `HostMsg::Freeze`).
    Freeze {
        targets: Vec<String>,
    },
    /// Thaw what `Freeze` froze.
    Thaw {
        targets: Vec<String>,
    },
}

fn sigterm() -> i32 {
    15
}
fn ten() -> u64 {
    10
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub cpu_total_ns: u64,
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    pub pids: u64,
}

/// The reply line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub titles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// To a stop that asked `keep_disk`: whether the disk was kept (false: the container's
    /// process had ended on its own first, and a disposable container's disk went unsynced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_kept: Option<bool>,
}

impl Response {
    pub fn ok() -> Response {
        Response {
            ok: true,
            ..Default::default()
        }
    }
    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
    pub fn with_state(state: State) -> Response {
        Response {
            ok: true,
            state: Some(state),
            ..Default::default()
        }
    }
}

/// Stream byte of the last frame of an exec session (body: `{"exit_code":N}`).
pub const EXIT_FRAME: u8 = 255;

/// Docker's multiplexed stream header: `[stream,0,0,0,len u32 BE]`.
pub fn mux_header(stream: u8, len: usize) -> [u8; 8] {
    let l = (len as u32).to_be_bytes();
    [stream, 0, 0, 0, l[0], l[1], l[2], l[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let cases = [
            (r#"{"op":"start"}"#, Request::Start),
            (
                r#"{"op":"stop","signal":15,"timeout_secs":10,"keep_disk":true}"#,
                Request::Stop {
                    signal: 15,
                    timeout_secs: 10,
                    keep_disk: true,
                },
            ),
            (
                r#"{"op":"stop"}"#,
                Request::Stop {
                    signal: 15,
                    timeout_secs: 10,
                    keep_disk: false,
                },
            ),
            (
                r#"{"op":"signal","signal":9,"exec_id":null}"#,
                Request::Signal {
                    signal: 9,
                    exec_id: None,
                    resume: false,
                },
            ),
            (
                r#"{"op":"attach","stdin":true,"stdout":true,"stderr":false}"#,
                Request::Attach {
                    stdin: true,
                    stdout: true,
                    stderr: false,
                },
            ),
            (r#"{"op":"pause"}"#, Request::Pause),
            (r#"{"op":"resume"}"#, Request::Resume),
            (
                r#"{"op":"top","ps_args":""}"#,
                Request::Top {
                    ps_args: String::new(),
                },
            ),
        ];
        for (i, (json, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                serde_json::from_str::<Request>(json).unwrap(),
                want,
                "test[{i}]"
            );
        }
    }

    #[test]
    fn spec_example_parses() {
        let s = r#"{ "id": "ab", "qemu": "/usr/bin/qemu-system-x86_64", "accel": "tcg",
  "kernel": "/d/kernel/vmlinuz", "initrd": "/d/kernel/initramfs-k.img",
  "kernel_cmdline_extra": "", "vcpus": 1, "memory_mib": 512,
  "root_disk": "/d/c/ab/root.qcow2", "run_as": "hyper-vm",
  "boot_timeout_secs": 60, "log_max_bytes": 10485760, "log_max_files": 3,
  "hostname": "abc123",
  "process": { "args": ["sh"], "env": ["PATH=/bin"], "cwd": "/", "user": "root",
               "tty": false, "open_stdin": false, "stdin_once": false,
               "tty_width": 0, "tty_height": 0 } }"#;
        let spec: Spec = serde_json::from_str(s).unwrap();
        assert_eq!(spec.process.args, ["sh"]);
        assert_eq!(spec.log_max_files, 3);
        assert_eq!(spec.network, None, "no network field: --network none");
    }

    #[test]
    fn network_spec() {
        let n: NetworkSpec = serde_json::from_str(
            r#"{"netns":"/run/netns/t1","bridge":"br0","tap":"tap0123456789ab",
                "mac":"02:42:ac:10:00:05","ip":"172.16.0.5/16","gateway":"172.16.0.1",
                "mtu":1450}"#,
        )
        .unwrap();
        assert!(n.resolv_conf.is_empty() && n.hosts.is_empty());
        let a = n.to_agent();
        assert_eq!(
            (a.mac.as_str(), a.ip.as_str(), a.gateway.as_str(), a.mtu),
            ("02:42:ac:10:00:05", "172.16.0.5/16", "172.16.0.1", 1450)
        );
    }

    #[test]
    fn response_shape() {
        let r = serde_json::to_string(&Response::ok()).unwrap();
        assert_eq!(r, r#"{"ok":true}"#);
        let r = serde_json::to_string(&Response::err("x")).unwrap();
        assert_eq!(r, r#"{"ok":false,"error":"x"}"#);
        let r = Response {
            disk_kept: Some(false),
            ..Response::ok()
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ok":true,"disk_kept":false}"#
        );
        let st = serde_json::to_value(State::default()).unwrap();
        assert_eq!(st["status"], "booting");
        assert!(st["exit_code"].is_null());
    }
}
