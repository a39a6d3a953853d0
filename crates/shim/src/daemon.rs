//! The shim process: daemonize, boot the VM, wait for the agent, serve `shim.sock`, record the
//! exit, power off, clean up.
//!
//! Runs on a current-thread tokio runtime on the main thread. That matters: QEMU is spawned with
//! `PR_SET_PDEATHSIG`, which fires when the *thread* that forked it exits, so the forking thread
//! must live as long as the shim.
//!
//! Shared state is one small `Mutex<Inner>` touched only in short, non-async sections; exit of the
//! main process is broadcast through a `watch` channel.
//!
//! Everything the guest sends is hostile input (the guest kernel is the tenant's): `guest` reads
//! and checks it before anything here acts on it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_proto::{Frame, GuestMsg, HostMsg, StartSpec, MAIN_STREAM, PROTOCOL_VERSION};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{SecondsFormat, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use vm::{Boot, Hypervisor, Qemu, VmConfig};

use crate::log::LogWriter;
use crate::{mux_header, paths, Request, Response, Spec, State, Status, EXIT_FRAME};

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Entry point of `hyper-shim --dir DIR`. Forks: the launching process waits for "ready" (exit 0)
/// or an error (printed, exit 1); the daemon continues in a new session.
pub fn main(dir: &Path) -> Result<()> {
    let dir =
        std::fs::canonicalize(dir).with_context(|| format!("container dir {}", dir.display()))?;
    let spec = Spec::load(&dir).context("reading spec.json")?;
    // O_CLOEXEC: QEMU must not inherit the write end, or the launcher never sees EOF.
    let (rfd, wfd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: single-threaded here (no runtime started yet), so fork is sound.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(wfd);
            let mut msg = String::new();
            let _ = std::fs::File::from(rfd).read_to_string(&mut msg);
            if msg == "ready" {
                std::process::exit(0);
            }
            if msg.is_empty() {
                msg = format!(
                    "hyper-shim exited during start-up (see {}/shim.log)",
                    dir.display()
                );
            }
            eprintln!("hyper-shim: {}", msg.trim_end());
            std::process::exit(1);
        }
        nix::unistd::ForkResult::Child => {
            drop(rfd);
            let _ = nix::unistd::setsid();
            // Where this supervisor works, for whoever looks at /proc/PID/cwd: it follows the
            // directory when a standby's is moved over a container's.
            let _ = std::env::set_current_dir(&dir);
            redirect_stdio(&dir);
            close_inherited_fds(std::os::fd::AsRawFd::as_raw_fd(&wfd));
            let ready = std::fs::File::from(wfd);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let code = rt.block_on(run(dir, spec, ready));
            std::process::exit(code);
        }
    }
}

fn redirect_stdio(dir: &Path) {
    let null = std::fs::OpenOptions::new().read(true).open("/dev/null");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(paths::SHIM_LOG));
    // SAFETY: dup2 on fds we own; 0/1/2 are replaced atomically.
    unsafe {
        if let Ok(n) = &null {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(n), 0);
        }
        if let Ok(l) = &log {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(l), 1);
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(l), 2);
        }
    }
}

/// Close every descriptor but 0-2 and `keep`: whatever the launcher inherited (a caller's
/// pipes, a jobserver) must not be held open by a long-lived daemon or leak into QEMU.
fn close_inherited_fds(keep: i32) {
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && fd != keep {
            // SAFETY: single-threaded, before any Rust object owns these descriptors (the
            // read_dir handle is already closed; closing an already-closed fd is harmless).
            unsafe { libc::close(fd) };
        }
    }
}

macro_rules! slog {
    ($($t:tt)*) => { eprintln!("{} {}", now(), format!($($t)*)) };
}

/// A line about guest misbehaviour in shim.log, rate-limited per VM (`guest::RateLimit`).
/// Whatever the guest chose goes through `guest::excerpt` first.
macro_rules! guest_log {
    ($shim:expr, $($t:tt)*) => { $shim.guest_misbehaves(format_args!($($t)*)) };
}

mod disk_fate;
mod guest;
mod helper;
mod run_state;

use disk_fate::DiskFate;
use guest::{excerpt, Expect, MainStream, Window};

/// Output of the main process to attachers.
#[derive(Clone, Debug)]
enum Out {
    Data(u8, Arc<Vec<u8>>),
    End,
}

/// Events for one exec session.
enum ExecEvent {
    Data(u8, Vec<u8>),
    Exited(i32),
}

/// An exec session the shim opened (stream > 0).
struct ExecStream {
    tx: mpsc::UnboundedSender<ExecEvent>,
    /// The guest has said `Started` for it (only then may output and `Exited` come).
    running: bool,
    /// Output credit the guest has left: the session's client drains it.
    window: Window,
}

#[derive(Default)]
struct Inner {
    state: State,
    /// Waiting for Started/StartFailed of a stream.
    starting: HashMap<u32, oneshot::Sender<GuestMsg>>,
    /// Requests the guest owes a reply, by req_id, with the kind of reply each takes.
    replies: HashMap<u64, (Expect, oneshot::Sender<GuestMsg>)>,
    execs: HashMap<u32, ExecStream>,
    exec_ids: HashMap<String, u32>,
    /// The main process, as far as the guest has reported it within the protocol.
    main: MainStream,
    /// Output credit the guest has left on the main stream.
    main_window: Window,
    /// Credit granted but not yet written to the guest, by stream (coalesced: a guest that
    /// does not read its port costs one integer per stream, not one frame per grant).
    pending_credit: HashMap<u32, u32>,
    /// `Shutdown` was sent: only now is a `Synced` an answer.
    shutdown_sent: bool,
    /// The agent connection is closed, or was given up on a protocol violation.
    agent_gone: bool,
    next_stream: u32,
    next_req: u64,
    stdin_held: bool,
    finishing: bool,
    /// The last stats the guest sent: what a paused VM reports (it uses no CPU meanwhile).
    last_stats: Option<crate::Stats>,
}

struct Shim {
    dir: PathBuf,
    spec: Spec,
    inner: Mutex<Inner>,
    /// Control frames to the agent (bounded: see `send`).
    ctl: mpsc::Sender<Frame>,
    /// Stdin frames to the agent (bounded: stdin waits, so a guest that does not read holds up
    /// its client rather than the shim's memory).
    data: mpsc::Sender<Frame>,
    /// `pending_credit` has something to write.
    credit: tokio::sync::Notify,
    /// Lines about guest misbehaviour, rate-limited per VM.
    guest_log: Mutex<guest::RateLimit>,
    out: broadcast::Sender<Out>,
    /// Some(state) once the main process (or the VM) is gone.
    exited: watch::Sender<Option<State>>,
    /// True once the main process runs: stdin that arrives earlier (`docker run -i` attaches
    /// before it starts) waits for it instead of reaching an agent with no process yet.
    started: watch::Sender<bool>,
    /// True once the agent has synced its disks after `Shutdown`: QEMU can go at once.
    synced: watch::Sender<bool>,
    /// Whether a `disposable` container's disk is synced at its end: see [`DiskFate`].
    disk_fate: DiskFate,
    qemu_pid: u32,
    qemu_gone: watch::Receiver<Option<String>>,
    log: Mutex<LogWriter>,
    /// Serialises pause, resume and run-state queries (`run_state`).
    run_state: tokio::sync::Mutex<()>,
    /// The root disk is mounted read-only in the guest already (see [`Up`]).
    root_mounted: bool,
}

impl Shim {
    fn save(&self, st: &State) {
        if let Err(e) = st.save(&self.dir) {
            slog!("writing state.json: {e}");
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) -> State {
        let st = {
            let mut inner = self.inner.lock().unwrap();
            f(&mut inner.state);
            inner.state.clone()
        };
        self.save(&st);
        st
    }

    fn state(&self) -> State {
        self.inner.lock().unwrap().state.clone()
    }

    /// Queue a control frame for the agent. A full queue means the guest has stopped reading
    /// its port: the frame is dropped rather than held.
    fn send(&self, f: Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.ctl.try_send(f) {
            guest_log!(
                self,
                "the guest is not reading its port: dropped a control frame"
            );
        }
    }

    /// Queue a stdin frame for the agent, waiting while the queue is full. False once the
    /// connection is gone.
    async fn send_data(&self, f: Frame) -> bool {
        self.data.send(f).await.is_ok()
    }

    /// Give the guest `n` more bytes of output credit on `stream` (an open one), coalesced
    /// with any grant not yet written.
    fn grant(&self, stream: u32, n: u32) {
        if n == 0 {
            return;
        }
        {
            let mut inner = self.inner.lock().unwrap();
            if stream == MAIN_STREAM {
                inner.main_window.grant(n);
            } else if let Some(e) = inner.execs.get_mut(&stream) {
                e.window.grant(n);
            } else {
                return;
            }
            let p = inner.pending_credit.entry(stream).or_default();
            *p = p.saturating_add(n);
        }
        self.credit.notify_one();
    }

    /// Record the end of the main process once (first caller wins).
    fn finish(&self, exit_code: i32, oom: bool, error: String) {
        let st = {
            let mut inner = self.inner.lock().unwrap();
            if inner.finishing {
                return;
            }
            inner.finishing = true;
            inner.main = MainStream::Done;
            let s = &mut inner.state;
            s.status = Status::Exited;
            s.finished_at = Some(now());
            s.exit_code = Some(exit_code);
            s.oom_killed = oom;
            s.paused = false;
            if !error.is_empty() {
                s.error = error;
            }
            s.clone()
        };
        let _ = self.log.lock().unwrap().flush();
        self.save(&st);
        slog!(
            "main process exited: code {exit_code} oom {oom} {}",
            excerpt(&st.error)
        );
        let _ = self.out.send(Out::End);
        self.exited.send_replace(Some(st));
    }

    fn qemu_alive(&self) -> bool {
        self.qemu_gone.borrow().is_none()
    }

    /// Stop QEMU now, without the guest. Inside the runtime (a VM with RBD volumes is given a
    /// few seconds to exit).
    ///
    /// A VM with RBD volumes gets SIGTERM first: QEMU then exits cleanly, flushing and closing
    /// its disks, and librbd releases each image's exclusive lock and watch. After a SIGKILL
    /// they stay until the watch times out on the OSDs (30 s), and the next VM that opens the
    /// image waits that long to write (a restore's `block_resize` waits for the lock). A QEMU
    /// that does not exit in 5 s (a cluster out of reach: librbd's close waits for its cache's
    /// writes) is killed.
    fn kill_qemu(&self) {
        if !self.qemu_alive() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.qemu_pid as i32);
        if !crate::volumes::has_rbd(&self.spec) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            return;
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let mut gone = self.qemu_gone.clone();
        tokio::spawn(async move {
            let exited =
                tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| g.is_some())).await;
            // Not reaped yet, so the pid is still QEMU's.
            if exited.is_err() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            }
        });
    }
}

async fn run(dir: PathBuf, spec: Spec, mut ready: std::fs::File) -> i32 {
    match boot_and_serve(dir.clone(), spec, &mut ready).await {
        Ok(()) => 0,
        Err(e) => {
            let msg = format!("{e:#}");
            slog!("failed: {msg}");
            let _ = ready.write_all(msg.as_bytes());
            let _ = std::fs::remove_file(dir.join(paths::SHIM_SOCK));
            let _ = std::fs::remove_file(dir.join(paths::AGENT_SOCK));
            let _ = std::fs::remove_file(dir.join(paths::SHIM_PID));
            1
        }
    }
}

fn console_tail(dir: &Path, n: usize) -> String {
    let text = std::fs::read(dir.join(paths::CONSOLE_LOG)).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn boot_and_serve(dir: PathBuf, spec: Spec, ready: &mut std::fs::File) -> Result<()> {
    let shim_pid = std::process::id();
    std::fs::write(dir.join(paths::SHIM_PID), format!("{shim_pid}\n"))?;
    for f in [paths::SHIM_SOCK, paths::AGENT_SOCK] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let state = State {
        status: Status::Booting,
        shim_pid,
        ..Default::default()
    };
    state.save(&dir)?;
    if spec.standby {
        return standby(dir, spec, state, ready).await;
    }
    crate::volumes::check(&spec)?;

    // The tap, kept open until the VM is up: a failed restore falls back to a cold boot on the
    // same tap.
    let nic = crate::nic::Nic::for_container(&spec)?;
    let cfg = crate::template::vm_config(&spec, &dir, &spec.root_disk, Some(nic.config()))?;
    let boot = Duration::from_secs(spec.boot_timeout_secs.max(1));
    // From a template when asked and possible; cold otherwise (also when the restore fails).
    let mut up = None;
    if let Some(templates) = spec.template_dir.clone() {
        match restore_from_template(&spec, &cfg, &templates, shim_pid).await {
            Ok(u) => up = Some(u),
            Err(e) => slog!("not restoring from a template: {e:#}; booting cold"),
        }
    }
    let up = match up {
        Some(u) => u,
        None => {
            for f in [paths::AGENT_SOCK, vm::QMP_SOCK] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            let (volumes, held) = crate::volumes::cold(&spec, &dir)?;
            let cold = Boot::Cold { volumes };
            let up = bring_up(&cfg, &cold, None, shim_pid, boot).await;
            // QEMU is up (it has read the volumes' keys) or gone.
            drop(held);
            match up {
                Ok(u) => u,
                Err(f) => {
                    return Err(boot_error(&dir, &f.qemu_err, f.qemu_pid, &f.gone, f.what).await)
                }
            }
        }
    };
    // QEMU holds the tap now; the VM's end is the tap's end.
    drop(nic);
    let listener = UnixListener::bind(dir.join(paths::SHIM_SOCK)).context("binding shim.sock")?;
    serve(dir, spec, state, up, listener, ready).await
}

/// A standby VM (see `crate::standby`): restore it, tell the launcher it is up, then wait for a
/// container to claim it, and serve that container.
async fn standby(
    standby_dir: PathBuf,
    spec: Spec,
    mut state: State,
    ready: &mut std::fs::File,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let templates = spec
        .template_dir
        .clone()
        .context("a standby VM needs a template_dir")?;
    let t = find_template(&spec, &templates).await?;
    let nic = crate::nic::StandbyNic::new()?;
    let scratch = crate::standby::scratch_disk(&spec, &templates, &standby_dir)?;
    // Before QEMU starts: a claim's rbd volumes are opened after it has chrooted.
    if let Err(e) = vm::volume::stage_rbd_module(&standby_dir) {
        slog!("standby: no rbd module for this VM ({e}): it cannot take rbd volumes");
    }
    let cfg = crate::template::vm_config(&spec, &standby_dir, &scratch, Some(nic.config()))?;
    let (ro, rw) = open_for_fdset(&scratch, "the scratch disk")?;
    let boot = Boot::Standby {
        ram: t.ram(),
        root_fds: [ro.as_raw_fd(), rw.as_raw_fd()],
    };
    let up = restore(&spec, &cfg, &boot, &t, std::process::id()).await;
    drop((ro, rw));
    let mut up = up.context("a standby VM")?;
    let kill = |up: &Up| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(up.qemu_pid as i32),
            nix::sys::signal::SIGKILL,
        );
    };
    let restored = t0.elapsed().as_secs_f64();
    match rehearse(&mut up).await {
        Ok(ms) => slog!(
            "standby: restored from template {} in {restored:.3}s, rehearsed a start in {ms} ms",
            t.meta.key
        ),
        Err(e) => {
            kill(&up);
            bail!("the standby VM's rehearsal failed: {e:#}");
        }
    }
    // The image disk under a prepared standby's root, as it was opened.
    let mut prepared = None;
    if let Some(p) = &spec.prepared_for {
        match prepare_for_image(&mut up, &standby_dir, p).await {
            Ok((ms, bytes, base)) => {
                slog!(
                    "standby: prepared for image {} in {ms} ms ({bytes} bytes read ahead)",
                    p.image_id
                );
                prepared = Some(base);
            }
            Err(e) => {
                kill(&up);
                bail!("preparing the standby VM for image {}: {e:#}", p.image_id);
            }
        }
        up.root_mounted = true;
    }
    slog!("standby: waiting for a container");
    state.qemu_pid = Some(up.qemu_pid);
    state.save(&standby_dir)?;
    let listener =
        UnixListener::bind(standby_dir.join(paths::SHIM_SOCK)).context("binding shim.sock")?;
    let _ = ready.write_all(b"ready");
    *ready = std::fs::File::open("/dev/null")?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut gone = up.gone.clone();
    let mut nic = Some(nic);
    let mut pause_at = Some(tokio::time::Instant::now() + crate::standby::SETTLE);
    let (dir, spec) = loop {
        let pause = async move {
            match pause_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut s = tokio::select! {
            _ = pause => {
                pause_at = None;
                let qmp = standby_dir.join(vm::QMP_SOCK);
                match tokio::task::spawn_blocking(move || crate::standby::set_running(&qmp, false)).await {
                    Ok(Ok(())) => slog!("standby: paused"),
                    // A standby that runs on is still a standby: it only costs more.
                    Ok(Err(e)) => slog!("standby: pausing: {e:#}"),
                    Err(e) => slog!("standby: pausing: {e}"),
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    slog!("accept: {e}");
                    continue;
                }
            },
            _ = gone.wait_for(|g| g.is_some()) => {
                slog!("standby: the VM exited");
                return Ok(());
            }
            _ = term.recv() => {
                slog!("standby: SIGTERM");
                kill(&up);
                return Ok(());
            }
        };
        let line = match crate::client::read_line(&mut s).await {
            Ok(l) => l,
            Err(_) => continue,
        };
        match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Claim { dir }) => {
                let claim_started = std::time::Instant::now();
                let (from, nic) = (standby_dir.clone(), nic.take());
                let key = t.meta.key.clone();
                let base = prepared.take();
                let claimed =
                    tokio::task::spawn_blocking(move || claim(&from, &dir, &key, base, nic))
                        .await
                        .map_err(|e| anyhow!("claim task: {e}"))
                        .and_then(|r| r);
                match claimed {
                    Ok(c) => {
                        slog!(
                            "standby: claimed in {} ms",
                            claim_started.elapsed().as_millis()
                        );
                        // The VM is the container's now, whether or not the asker still listens.
                        let _ = reply(&mut s, &Response::ok()).await;
                        break c;
                    }
                    Err(e) => {
                        // Half claimed (a disk attached, a tap moved) is no standby any more.
                        let msg = format!("{e:#}");
                        slog!("standby: claim failed: {msg}");
                        kill(&up);
                        let _ = reply(&mut s, &Response::err(msg.clone())).await;
                        bail!("claim failed: {msg}");
                    }
                }
            }
            Ok(Request::State) => {
                let _ = reply(&mut s, &Response::with_state(state.clone())).await;
            }
            Ok(Request::Shutdown) => {
                kill(&up);
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| g.is_some()))
                        .await;
                let _ = reply(&mut s, &Response::ok()).await;
                return Ok(());
            }
            Ok(_) => {
                let _ = reply(
                    &mut s,
                    &Response::err("a standby VM serves no container yet"),
                )
                .await;
            }
            Err(e) => {
                let _ = reply(&mut s, &Response::err(format!("bad request: {e}"))).await;
            }
        }
    };
    slog!(
        "standby: claimed by container {} ({})",
        spec.id,
        dir.display()
    );
    serve(dir, spec, state, up, listener, ready).await
}

/// Have the standby's agent rehearse a start on the scratch disk (see `HostMsg::Rehearse`).
async fn rehearse(up: &mut Up) -> Result<u64> {
    let msg = HostMsg::Rehearse(StartSpec {
        process: crate::standby::scratch_process(),
        hostname: "scratch".into(),
        root_device: "/dev/vda".into(),
        entropy: crate::identity::host_random(64),
        realtime_ns: crate::identity::realtime_ns(),
        machine_id: "0".repeat(32),
        network: Some(crate::standby::scratch_network()),
        volumes: Vec::new(),
        tmpfs: Vec::new(),
        root_mounted: false,
    });
    let (millis, error) = ask_standby_agent(up, msg, |m| match m {
        GuestMsg::Rehearsed { millis, error } => Some((millis, error)),
        _ => None,
    })
    .await?;
    if !error.is_empty() {
        bail!("{}", excerpt(&error));
    }
    Ok(millis)
}

/// Send `msg` to a standby's agent and wait, 30 s at most, for the answer `answer` picks out
/// of what the agent sends.
async fn ask_standby_agent<T>(
    up: &mut Up,
    msg: HostMsg,
    answer: impl Fn(GuestMsg) -> Option<T>,
) -> Result<T> {
    agent_proto::write_frame(&mut up.wr, &Frame::host(&msg)).await?;
    let answered = async {
        loop {
            let f = agent_proto::read_frame(&mut up.rd).await?;
            if let Some(a) = f.guest_msg().ok().and_then(&answer) {
                return Ok::<_, std::io::Error>(a);
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(30), answered).await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => bail!("agent connection: {e}"),
        Err(_) => bail!("no answer in 30s"),
    }
}

/// Have a standby prepared for an image take its own copy of the image's empty overlay as its
/// root disk, and its agent mount it read-only and read ahead (see `HostMsg::PrepareRoot`):
/// the time it took in the guest, the bytes read ahead, and the image disk under it as opened.
async fn prepare_for_image(
    up: &mut Up,
    standby_dir: &Path,
    p: &crate::PrepareSpec,
) -> Result<(u64, u64, crate::standby::Base)> {
    let disk = crate::standby::prepared_disk(standby_dir);
    let (template, copy, qmp) = (
        p.overlay_template.clone(),
        disk.clone(),
        standby_dir.join(vm::QMP_SOCK),
    );
    let base = tokio::task::spawn_blocking(move || {
        std::fs::copy(&template, &copy)
            .with_context(|| format!("copying {}", template.display()))?;
        crate::standby::attach_root_disk(&qmp, &copy)?
            .context("the image's empty overlay names no base disk")
    })
    .await
    .map_err(|e| anyhow!("attach task: {e}"))??;
    let msg = HostMsg::PrepareRoot {
        root_device: "/dev/vda".into(),
        process: p.process.to_agent(),
        preread_max: p.preread_max,
    };
    let (millis, bytes, error) = ask_standby_agent(up, msg, |m| match m {
        GuestMsg::Prepared {
            millis,
            bytes,
            error,
        } => Some((millis, bytes, error)),
        _ => None,
    })
    .await?;
    if !error.is_empty() {
        bail!("{}", excerpt(&error));
    }
    Ok((millis, bytes, base))
}

/// Give this standby VM to the container in `container_dir`: its disk, its NIC, then the
/// directory. Anything that fails leaves the container's directory as it was. A standby
/// prepared for an image has its own copy of the image's empty overlay over `prepared` (the
/// image disk, as opened) mounted already: it takes a container whose root disk is still
/// byte-equal to that copy, over the same image disk, and the copy replaces it.
fn claim(
    standby_dir: &Path,
    container_dir: &Path,
    template_key: &str,
    prepared: Option<crate::standby::Base>,
    nic: Option<crate::nic::StandbyNic>,
) -> Result<(PathBuf, Spec)> {
    let dir = std::fs::canonicalize(container_dir)
        .with_context(|| format!("container dir {}", container_dir.display()))?;
    let spec = Spec::load(&dir).context("reading spec.json")?;
    let templates = spec
        .template_dir
        .clone()
        .context("the container's spec has no template_dir")?;
    let want = crate::template::identify(&spec, &templates)?.key;
    if want != template_key {
        bail!("the container needs template {want}, this standby VM has {template_key}");
    }
    // Its memory may come from a file written since it was restored (`crate::integrity`).
    if !crate::template::unchanged_since_built(&templates, template_key) {
        bail!("the template {template_key} this standby VM was restored from has changed since: not claiming it");
    }
    crate::volumes::check(&spec)?;
    crate::volumes::check_claimable(standby_dir, &spec)?;
    let qmp = standby_dir.join(vm::QMP_SOCK);
    match &prepared {
        Some(base) => crate::standby::check_pristine(standby_dir, &dir, &spec.root_disk, base)?,
        None => drop(crate::standby::attach_root_disk(&qmp, &spec.root_disk)?),
    }
    crate::volumes::attach(standby_dir, &spec)?;
    nic.context("the standby's NIC was already given away")?
        .claim(&spec)?;
    crate::standby::set_running(&qmp, true).context("resuming the standby")?;
    crate::standby::move_into(standby_dir, &dir)?;
    Ok((dir, spec))
}

/// Serve the container of `spec` in the VM `up` until its main process has exited and the VM
/// is gone.
async fn serve(
    dir: PathBuf,
    spec: Spec,
    mut state: State,
    up: Up,
    listener: UnixListener,
    ready: &mut std::fs::File,
) -> Result<()> {
    let Up {
        qemu_pid,
        gone: gone_rx,
        rd,
        wr,
        version,
        kernel,
        root_mounted,
    } = up;
    state.qemu_pid = Some(qemu_pid);
    state.save(&dir)?;
    slog!(
        "agent ready: protocol {version}, kernel {}",
        excerpt(&kernel)
    );

    let log = LogWriter::open(
        dir.join(paths::CTR_LOG),
        spec.log_max_bytes,
        spec.log_max_files,
    )?;
    let (ctl, ctl_rx) = mpsc::channel::<Frame>(guest::CONTROL_QUEUE);
    let (data, data_rx) = mpsc::channel::<Frame>(guest::DATA_QUEUE);
    state.status = Status::Ready;
    let (out, _) = broadcast::channel(guest::OUT_QUEUE);
    let (exited, _) = watch::channel(None);
    let shim = Arc::new(Shim {
        dir: dir.clone(),
        spec,
        inner: Mutex::new(Inner {
            state,
            next_stream: 1,
            next_req: 1,
            ..Default::default()
        }),
        ctl,
        data,
        credit: tokio::sync::Notify::new(),
        guest_log: Mutex::new(guest::RateLimit::per_minute(guest::LOG_LINES_PER_MINUTE)),
        out,
        exited,
        started: watch::channel(false).0,
        synced: watch::channel(false).0,
        disk_fate: DiskFate::default(),
        qemu_pid,
        qemu_gone: gone_rx.clone(),
        log: Mutex::new(log),
        run_state: tokio::sync::Mutex::new(()),
        root_mounted,
    });
    shim.save(&shim.state());

    let _ = ready.write_all(b"ready");
    // Close the pipe so the launcher exits.
    // SAFETY: replacing our handle with /dev/null closes the original pipe fd exactly once.
    *ready = std::fs::File::open("/dev/null")?;

    tokio::spawn(guest::writer(shim.clone(), wr, ctl_rx, data_rx));
    tokio::spawn(guest::reader(shim.clone(), rd));
    // QEMU died under us?
    {
        let shim = shim.clone();
        let mut gone = gone_rx.clone();
        tokio::spawn(async move {
            let _ = gone.wait_for(|g| g.is_some()).await;
            let desc = gone.borrow().clone().unwrap_or_default();
            shim.finish(
                137,
                false,
                format!("the VM exited unexpectedly (qemu: {desc})"),
            );
        });
    }
    // A VM paused by a full host disk (`crate::disk_full`).
    {
        let shim = shim.clone();
        let (gone, files) = (gone_rx.clone(), crate::disk_full::disk_files(&shim.spec));
        tokio::spawn(crate::disk_full::watch(
            dir.clone(),
            files,
            gone,
            move |full| {
                slog!(
                    "the VM is {}",
                    if full {
                        "paused: the host disk is full"
                    } else {
                        "running again"
                    }
                );
                shim.update(|s| s.disk_full = full);
            },
            |line| slog!("{line}"),
        ));
    }
    // SIGTERM to the shim = shutdown.
    {
        let shim = shim.clone();
        tokio::spawn(async move {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
                slog!("SIGTERM: shutting down");
                shim.kill_qemu();
                shim.finish(137, false, "the shim was terminated".into());
            }
        });
    }
    // Connections being served.
    let (conns, mut conns_rx) = watch::channel(0usize);
    let conns = Arc::new(conns);
    if shim.spec.helper {
        tokio::spawn(helper::end_when_idle(shim.clone(), conns_rx.clone()));
    }
    {
        let shim = shim.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        let shim = shim.clone();
                        let conns = conns.clone();
                        conns.send_modify(|n| *n += 1);
                        tokio::spawn(async move {
                            if let Err(e) = handle(shim, s).await {
                                slog!("connection: {e:#}");
                            }
                            conns.send_modify(|n| *n -= 1);
                        });
                    }
                    Err(e) => {
                        slog!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    // Wait for the end of the main process, then power off and clean up.
    let mut ex = shim.exited.subscribe();
    let _ = ex.wait_for(|s| s.is_some()).await;
    let disposable = shim.spec.disk_goes_at_end() && shim.disk_fate.discard();
    let synced = if disposable {
        None
    } else {
        Some(sync_guest(&shim, &gone_rx).await)
    };
    if gone_rx.borrow().is_none() {
        match synced {
            None => slog!("the container's disk goes with it: stopping QEMU without a sync"),
            Some(SyncEnd::Synced) => slog!("guest synced: stopping QEMU"),
            Some(SyncEnd::CpuBudgetSpent) => slog!(
                "VM used {}s of CPU without syncing: killing QEMU",
                SYNC_CPU_BUDGET.as_secs()
            ),
            Some(SyncEnd::TimedOut) => slog!(
                "VM did not sync in {}s: killing QEMU",
                SYNC_WALL_CEILING.as_secs()
            ),
        }
        shim.kill_qemu();
        let mut gone = gone_rx.clone();
        let _ = tokio::time::timeout(QEMU_END_WAIT, gone.wait_for(|g| g.is_some())).await;
    }
    // Let handlers that wait for the exit (wait/stop/attach) write their replies.
    let _ = tokio::time::timeout(REPLIES_WAIT, conns_rx.wait_for(|n| *n == 0)).await;
    for f in [paths::SHIM_SOCK, paths::AGENT_SOCK, paths::SHIM_PID] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    slog!("shim exiting");
    Ok(())
}

/// What a guest gets to sync its disks at its end: CPU time, as the host counts it for its QEMU,
/// not wall time, so that a loaded host cannot cut an honest guest's sync short and lose what
/// it wrote (a sync of all a guest may hold dirty takes well under a second of it); and a
/// wall-clock ceiling for a guest that neither syncs nor runs.
const SYNC_CPU_BUDGET: Duration = Duration::from_secs(3);
const SYNC_WALL_CEILING: Duration = Duration::from_secs(10);
/// How long QEMU, once killed, is waited for.
const QEMU_END_WAIT: Duration = Duration::from_secs(5);
/// How long the handlers waiting for the exit get to write their replies.
const REPLIES_WAIT: Duration = Duration::from_secs(3);

/// The longest a supervisor takes from its main process's end to its own: hyperd waits that
/// long before it takes the supervisor for stuck.
pub const END_LIMIT: Duration = Duration::from_secs(
    SYNC_WALL_CEILING.as_secs() + QEMU_END_WAIT.as_secs() + REPLIES_WAIT.as_secs(),
);

/// How a guest's sync at its end ended.
enum SyncEnd {
    /// The agent said it synced, or the VM went.
    Synced,
    CpuBudgetSpent,
    TimedOut,
}

/// Asks the agent to sync its disks (`Shutdown`) and waits for it, within [`SYNC_CPU_BUDGET`]
/// and [`SYNC_WALL_CEILING`]. A guest's own power-off takes a second or more under TCG, so QEMU
/// is stopped as soon as nothing is left to write.
async fn sync_guest(shim: &Shim, gone_rx: &watch::Receiver<Option<String>>) -> SyncEnd {
    shim.inner.lock().unwrap().shutdown_sent = true;
    shim.send(Frame::host(&HostMsg::Shutdown));
    let mut gone = gone_rx.clone();
    let mut synced = shim.synced.subscribe();
    let synced_or_gone = async {
        tokio::select! {
            _ = synced.wait_for(|s| *s) => {}
            _ = gone.wait_for(|g| g.is_some()) => {}
        }
    };
    let qemu_cpu = || qemu_cpu_time(shim.qemu_pid);
    let cpu_at_start = qemu_cpu();
    let budget_spent = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            match (cpu_at_start, qemu_cpu()) {
                (Some(start), Some(now)) if now.saturating_sub(start) < SYNC_CPU_BUDGET => {}
                // A QEMU whose CPU time cannot be read is gone, or going: its end decides.
                (None, _) | (_, None) => std::future::pending::<()>().await,
                _ => return,
            }
        }
    };
    tokio::select! {
        _ = synced_or_gone => SyncEnd::Synced,
        _ = budget_spent => SyncEnd::CpuBudgetSpent,
        _ = tokio::time::sleep(SYNC_WALL_CEILING) => SyncEnd::TimedOut,
    }
}

/// The CPU time QEMU (`pid`, our child) has used, all its threads together.
fn qemu_cpu_time(pid: u32) -> Option<Duration> {
    let clock = nix::time::clock_getcpuclockid(nix::unistd::Pid::from_raw(pid as i32)).ok()?;
    let t = nix::time::clock_gettime(clock).ok()?;
    Some(Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
}

/// A VM whose agent has answered `Ready`.
struct Up {
    qemu_pid: u32,
    gone: watch::Receiver<Option<String>>,
    rd: tokio::net::unix::OwnedReadHalf,
    wr: tokio::net::unix::OwnedWriteHalf,
    version: u32,
    kernel: String,
    /// The root disk behind the slot is mounted read-only in the guest already (a standby
    /// prepared for its image): `Start` says so.
    root_mounted: bool,
}

/// A VM that did not come up (QEMU may still need killing: see `boot_error`).
struct BootFailure {
    what: String,
    qemu_pid: u32,
    qemu_err: Arc<Mutex<Vec<String>>>,
    gone: watch::Receiver<Option<String>>,
}

impl BootFailure {
    /// Kill QEMU and wait until it is reaped.
    async fn kill(&self) {
        if self.gone.borrow().is_none() && self.qemu_pid != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.qemu_pid as i32),
                nix::sys::signal::SIGKILL,
            );
        }
        let mut g = self.gone.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), g.wait_for(|x| x.is_some())).await;
    }
}

/// Find or build the template for `spec` and restore this VM from it.
async fn restore_from_template(
    spec: &Spec,
    cfg: &VmConfig,
    templates: &Path,
    shim_pid: u32,
) -> Result<Up> {
    let t0 = std::time::Instant::now();
    let t = find_template(spec, templates).await?;
    slog!(
        "template {} (built {}) found in {:.3}s",
        t.meta.key,
        t.meta.created_at,
        t0.elapsed().as_secs_f64()
    );
    let (ro, rw) = open_for_fdset(&spec.root_disk, "the root disk")?;
    crate::template::check_root_disk(&ro)?;
    let (volumes, volume_files) = crate::volumes::for_restore(spec, &cfg.dir)?;
    let boot = Boot::Restore {
        ram: t.ram(),
        root_fds: Some([ro.as_raw_fd(), rw.as_raw_fd()]),
        volumes,
    };
    let up = restore(spec, cfg, &boot, &t, shim_pid).await;
    drop((ro, rw, volume_files));
    let up = up?;
    slog!(
        "restored from template {} in {:.3}s",
        t.meta.key,
        t0.elapsed().as_secs_f64()
    );
    Ok(up)
}

/// The template for `spec`, built first when there is none (never waiting for another
/// builder: see `template::ensure`).
async fn find_template(spec: &Spec, templates: &Path) -> Result<crate::template::Template> {
    // Until the serving loop's own SIGTERM handling is up, a terminated shim must not leave a
    // template VM behind.
    crate::template::kill_build_vm_on_signals();
    let (s2, dir2) = (spec.clone(), templates.to_path_buf());
    tokio::task::spawn_blocking(move || crate::template::ensure(&s2, &dir2, false))
        .await
        .map_err(|e| anyhow!("template task: {e}"))?
        .map_err(Into::into)
}

/// `path` opened twice, read-only and read-write, for QEMU's fd set (see `Boot::Restore`).
/// Opened with O_CLOEXEC; `bring_up` lets exactly these two through to QEMU.
pub(crate) fn open_for_fdset(path: &Path, what: &str) -> Result<(std::fs::File, std::fs::File)> {
    let ro = std::fs::File::open(path).with_context(|| format!("opening {what}"))?;
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {what}"))?;
    Ok((ro, rw))
}

/// Spawn QEMU for `boot` and restore template `t` into it; when that fails, QEMU is killed and
/// the error says what it said.
async fn restore(
    spec: &Spec,
    cfg: &VmConfig,
    boot: &Boot,
    t: &crate::template::Template,
    shim_pid: u32,
) -> Result<Up> {
    // A restored guest is up in well under a second; a restore that has not answered after
    // 15 s (scaled by the boot timeout for slow hosts) will not, and a cold boot still can.
    let limit = Duration::from_secs((spec.boot_timeout_secs / 4).clamp(5, 15));
    match bring_up(cfg, boot, Some(t), shim_pid, limit).await {
        Ok(u) => Ok(u),
        Err(f) => {
            f.kill().await;
            let errs = f.qemu_err.lock().unwrap().join("; ");
            if errs.is_empty() {
                bail!("restoring template {}: {}", t.meta.key, f.what)
            }
            bail!(
                "restoring template {}: {} (QEMU said: {errs})",
                t.meta.key,
                f.what
            )
        }
    }
}

/// Spawn QEMU for `boot`, restore `template` into it when given, connect to the agent and wait
/// for its `Ready` (the answer to our `Hello`, or the boot-time one).
async fn bring_up(
    cfg: &VmConfig,
    boot: &Boot,
    template: Option<&crate::template::Template>,
    shim_pid: u32,
    timeout: Duration,
) -> Result<Up, BootFailure> {
    let early = |what: String| BootFailure {
        what,
        qemu_pid: 0,
        qemu_err: Arc::new(Mutex::new(Vec::new())),
        gone: watch::channel(Some(String::new())).1,
    };
    let mut cmd = Qemu
        .command_for(cfg, boot)
        .map_err(|e| early(e.to_string()))?;
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut inherit: Vec<i32> = match boot {
        Boot::Restore {
            root_fds: Some(fds),
            ..
        }
        | Boot::Standby { root_fds: fds, .. } => fds.to_vec(),
        _ => Vec::new(),
    };
    for v in boot.volumes().iter().flatten() {
        inherit.extend_from_slice(v.backing.fds());
    }
    inherit.extend(cfg.nic.as_ref().map(|n| n.tap_fd));
    // SAFETY: only async-signal-safe calls (prctl, getppid, fcntl, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() as u32 != shim_pid {
                libc::_exit(1);
            }
            for &fd in &inherit {
                libc::fcntl(fd, libc::F_SETFD, 0);
            }
            Ok(())
        });
    }
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| early(format!("starting QEMU: {e}")))?;
    let qemu_pid = child.id().unwrap_or(0);
    let how = match boot {
        Boot::Cold { .. } => "cold boot",
        Boot::Restore { .. } => "restore",
        Boot::Standby { .. } => "standby",
        Boot::TemplateSave { .. } => "template",
    };
    slog!("qemu pid {qemu_pid} accel {} ({how})", cfg.accel);

    // QEMU's stderr: keep the last lines for error messages.
    let qemu_err = Arc::new(Mutex::new(Vec::<String>::new()));
    if let Some(mut err) = child.stderr.take() {
        let qemu_err = qemu_err.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf).await;
            let text = String::from_utf8_lossy(&buf);
            let mut v = qemu_err.lock().unwrap();
            v.extend(text.lines().map(str::to_string));
        });
    }
    let (gone_tx, gone_rx) = watch::channel(None::<String>);
    tokio::spawn(async move {
        let st = child.wait().await;
        let desc = match st {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        gone_tx.send_replace(Some(desc));
    });
    let fail = |what: String| BootFailure {
        what,
        qemu_pid,
        qemu_err: qemu_err.clone(),
        gone: gone_rx.clone(),
    };

    if let Some(t) = template {
        let (t, sock, volumes) = (t.clone(), cfg.qmp_sock(), boot.volumes().clone());
        let r = tokio::task::spawn_blocking(move || {
            crate::template::restore(&t, &sock, &volumes, Duration::from_secs(10))
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(fail(format!("{e:#}"))),
            Err(e) => return Err(fail(format!("restore task: {e}"))),
        }
    }

    let agent = match tokio::time::timeout(timeout, connect_agent(&cfg.dir, gone_rx.clone())).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Err(_) => {
            return Err(fail(format!(
                "guest agent not ready after {}s",
                timeout.as_secs()
            )))
        }
    };
    let (mut rd, mut wr) = agent.into_split();
    let wait_ready = async {
        agent_proto::write_frame(
            &mut wr,
            &Frame::host(&HostMsg::Hello {
                version: PROTOCOL_VERSION,
                entropy: Vec::new(),
            }),
        )
        .await?;
        // Whatever else comes first is skipped unparsed (see `guest`).
        loop {
            let agent_proto::Incoming::Frame(f) = agent_proto::read_frame_or_skip(&mut rd).await?
            else {
                continue;
            };
            if !guest::is_ready(&f) {
                continue;
            }
            if let Ok(GuestMsg::Ready {
                version,
                kernel_release,
            }) = f.guest_msg()
            {
                return Ok::<_, std::io::Error>((version, kernel_release));
            }
        }
    };
    let mut gone = gone_rx.clone();
    let res = tokio::select! {
        r = tokio::time::timeout(timeout, wait_ready) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("agent connection failed: {e}")),
            Err(_) => Err(format!("guest agent not ready after {}s", timeout.as_secs())),
        },
        _ = gone.wait_for(|g| g.is_some()) => Err("QEMU exited during boot".to_string()),
    };
    match res {
        Ok((version, kernel)) => Ok(Up {
            root_mounted: false,
            qemu_pid,
            gone: gone_rx,
            rd,
            wr,
            version,
            kernel,
        }),
        Err(e) => Err(fail(e)),
    }
}

async fn connect_agent(dir: &Path, gone: watch::Receiver<Option<String>>) -> Result<UnixStream> {
    let path = dir.join(paths::AGENT_SOCK);
    loop {
        if gone.borrow().is_some() {
            bail!("QEMU exited during boot");
        }
        match UnixStream::connect(&path).await {
            Ok(s) => return Ok(s),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Kill QEMU and build the boot failure message with the console tail.
async fn boot_error(
    dir: &Path,
    qemu_err: &Mutex<Vec<String>>,
    qemu_pid: u32,
    gone: &watch::Receiver<Option<String>>,
    what: String,
) -> anyhow::Error {
    if gone.borrow().is_none() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(qemu_pid as i32),
            nix::sys::signal::SIGKILL,
        );
    }
    // QEMU reaped (so no process is left when the launcher reports) and its stderr read.
    let mut g = gone.clone();
    let _ = tokio::time::timeout(Duration::from_secs(5), g.wait_for(|x| x.is_some())).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let errs = qemu_err.lock().unwrap().join("\n");
    let mut st = State::load(dir).unwrap_or_default();
    st.status = Status::Exited;
    st.error = what.clone();
    st.finished_at = Some(now());
    let _ = st.save(dir);
    let mut msg = what;
    if !errs.is_empty() {
        msg.push_str(&format!("\nQEMU said:\n{errs}"));
    }
    msg.push_str(&format!(
        "\nlast lines of the guest console:\n{}",
        console_tail(dir, 20)
    ));
    anyhow!(msg)
}

async fn reply(s: &mut UnixStream, r: &Response) -> Result<()> {
    let mut line = serde_json::to_vec(r)?;
    line.push(b'\n');
    s.write_all(&line).await?;
    Ok(())
}

async fn handle(shim: Arc<Shim>, mut s: UnixStream) -> Result<()> {
    let line = crate::client::read_line(&mut s).await?;
    let req: Request = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => return reply(&mut s, &Response::err(format!("bad request: {e}"))).await,
    };
    match req {
        Request::State => {
            let st = run_state::current(&shim).await;
            reply(&mut s, &Response::with_state(st)).await
        }
        Request::Pause => reply(&mut s, &run_state::set_paused(&shim, true).await).await,
        Request::Resume => reply(&mut s, &run_state::set_paused(&shim, false).await).await,
        Request::Claim { .. } => {
            reply(
                &mut s,
                &Response::err("this VM already belongs to a container"),
            )
            .await
        }
        Request::Start => {
            let r = start(&shim).await;
            reply(&mut s, &r).await
        }
        Request::Wait => {
            let st = wait_exit(&shim).await;
            reply(&mut s, &Response::with_state(st)).await
        }
        Request::Stop {
            signal,
            timeout_secs,
            keep_disk,
        } => {
            // Decided before the stop: the end it causes must find the disk kept.
            let disk_kept =
                keep_disk.then(|| !shim.spec.disk_goes_at_end() || shim.disk_fate.keep());
            let st = stop(&shim, signal, timeout_secs).await;
            let mut r = Response::with_state(st);
            r.disk_kept = disk_kept;
            reply(&mut s, &r).await
        }
        Request::Shutdown if shim.spec.helper => {
            // The serving loop's own end follows: the guest syncs what archive streams wrote,
            // then QEMU goes.
            shim.finish(0, false, String::new());
            reply(&mut s, &Response::with_state(shim.state())).await
        }
        Request::Shutdown => {
            shim.kill_qemu();
            shim.finish(137, false, "the VM was shut down".into());
            reply(&mut s, &Response::with_state(shim.state())).await
        }
        Request::Signal {
            signal,
            exec_id,
            resume,
        } => {
            let r = match stream_of(&shim, exec_id.as_deref()) {
                Ok(stream) => {
                    shim.send(Frame::host(&HostMsg::Signal { stream, signal }));
                    if resume {
                        run_state::resume_if_paused(&shim).await;
                    }
                    Response::ok()
                }
                Err(e) => Response::err(e),
            };
            reply(&mut s, &r).await
        }
        Request::Resize {
            width,
            height,
            exec_id,
        } => {
            let r = match stream_of(&shim, exec_id.as_deref()) {
                Ok(stream) => {
                    shim.send(Frame::host(&HostMsg::Resize {
                        stream,
                        width,
                        height,
                    }));
                    Response::ok()
                }
                Err(e) => Response::err(e),
            };
            reply(&mut s, &r).await
        }
        Request::Top { ps_args } => {
            let r = match ask(&shim, Expect::Top, |req_id| HostMsg::Top {
                req_id,
                ps_args,
            })
            .await
            {
                Ok(GuestMsg::TopReply {
                    titles, processes, ..
                }) => Response {
                    ok: true,
                    titles: Some(titles),
                    processes: Some(processes),
                    ..Default::default()
                },
                Ok(GuestMsg::Error { message, .. }) => Response::err(message),
                Ok(_) => Response::err("unexpected reply from the guest agent"),
                Err(e) => Response::err(e),
            };
            reply(&mut s, &r).await
        }
        Request::Freeze { targets } => {
            let r = ask(&shim, Expect::Done, |req_id| HostMsg::Freeze {
                req_id,
                targets,
            })
            .await;
            reply(&mut s, &crate::volumes::done(r)).await
        }
        Request::Thaw { targets } => {
            let r = ask(&shim, Expect::Done, |req_id| HostMsg::Thaw {
                req_id,
                targets,
            })
            .await;
            reply(&mut s, &crate::volumes::done(r)).await
        }
        Request::Stats => {
            // Display only (`docker stats`): nothing the guest reports here is billed. Metering
            // uses the shim's own clock (`started_at`, `finished_at` in state.json).
            if let Some(last) = paused_stats(&shim) {
                let r = Response {
                    ok: true,
                    stats: Some(last),
                    ..Default::default()
                };
                return reply(&mut s, &r).await;
            }
            let r = match ask(&shim, Expect::Stats, |req_id| HostMsg::Stats { req_id }).await {
                Ok(GuestMsg::StatsReply {
                    memory_usage,
                    memory_limit,
                    cpu_total_ns,
                    system_cpu_ns,
                    online_cpus,
                    pids,
                    ..
                }) => {
                    let stats = crate::Stats {
                        memory_usage,
                        memory_limit,
                        cpu_total_ns,
                        system_cpu_ns,
                        online_cpus,
                        pids,
                    };
                    shim.inner.lock().unwrap().last_stats = Some(stats.clone());
                    Response {
                        ok: true,
                        stats: Some(stats),
                        ..Default::default()
                    }
                }
                Ok(GuestMsg::Error { message, .. }) => Response::err(message),
                Ok(_) => Response::err("unexpected reply from the guest agent"),
                Err(e) => Response::err(e),
            };
            reply(&mut s, &r).await
        }
        Request::Attach {
            stdin,
            stdout,
            stderr,
        } => attach(shim, s, stdin, stdout, stderr).await,
        Request::Exec {
            exec_id,
            args,
            env,
            cwd,
            user,
            tty,
            stdin,
            tty_width,
            tty_height,
        } => {
            let process = agent_proto::ProcessSpec {
                args,
                env,
                cwd,
                user,
                tty,
                open_stdin: stdin,
                tty_width,
                tty_height,
                group_add: shim.spec.process.group_add.clone(),
            };
            exec(
                shim,
                s,
                Some(exec_id),
                |stream| HostMsg::Exec { stream, process },
                stdin,
                tty,
            )
            .await
        }
        Request::Archive { request } => {
            let put = request.op == agent_proto::ArchiveOp::Put;
            exec(
                shim,
                s,
                None,
                |stream| HostMsg::Archive { stream, request },
                put,
                false,
            )
            .await
        }
        Request::Mount => {
            let r = mount(&shim).await;
            reply(&mut s, &r).await
        }
    }
}

/// A helper VM's one job before its archive streams: the container's disks, no process.
async fn mount(shim: &Arc<Shim>) -> Response {
    if !shim.spec.helper {
        return Response::err("only a helper VM mounts without starting");
    }
    if shim.state().status != Status::Ready {
        return Response::err("the helper VM is not ready to mount");
    }
    let r = ask_when(shim, Status::Ready, Expect::Done, |req_id| HostMsg::Mount {
        req_id,
        root_device: "/dev/vda".into(),
        volumes: crate::volumes::mounts(&shim.spec),
    })
    .await;
    let r = crate::volumes::done(r);
    if r.ok {
        // Archive streams run only on a running VM.
        shim.update(|s| s.status = Status::Running);
    }
    r
}

fn stream_of(shim: &Shim, exec_id: Option<&str>) -> Result<u32, String> {
    match exec_id {
        None | Some("") => {
            if shim.state().status != Status::Running {
                return Err("container is not running".into());
            }
            Ok(MAIN_STREAM)
        }
        Some(id) => shim
            .inner
            .lock()
            .unwrap()
            .exec_ids
            .get(id)
            .copied()
            .ok_or_else(|| format!("no such exec: {id}")),
    }
}

/// While the VM is paused: the last stats the guest sent (zeros when it sent none).
fn paused_stats(shim: &Shim) -> Option<crate::Stats> {
    let inner = shim.inner.lock().unwrap();
    (inner.state.status == Status::Running && inner.state.paused)
        .then(|| inner.last_stats.clone().unwrap_or_default())
}

/// Send the request `msg` builds and wait for the guest's reply of kind `expect` (or `Error`).
async fn ask(
    shim: &Shim,
    expect: Expect,
    msg: impl FnOnce(u64) -> HostMsg,
) -> Result<GuestMsg, String> {
    ask_when(shim, Status::Running, expect, msg).await
}

/// `ask`, of a VM in `status` (a helper VM mounts while `Ready`).
async fn ask_when(
    shim: &Shim,
    status: Status,
    expect: Expect,
    msg: impl FnOnce(u64) -> HostMsg,
) -> Result<GuestMsg, String> {
    let (tx, rx) = oneshot::channel();
    let req_id = {
        let mut inner = shim.inner.lock().unwrap();
        if inner.state.status != status {
            return Err(match status {
                Status::Running => "container is not running".into(),
                other => format!("the VM is not {other:?}").to_lowercase(),
            });
        }
        if inner.agent_gone {
            return Err("the guest agent connection is gone".into());
        }
        if inner.state.paused {
            return Err("container is paused".into());
        }
        let id = inner.next_req;
        inner.next_req += 1;
        inner.replies.insert(id, (expect, tx));
        id
    };
    shim.send(Frame::host(&msg(req_id)));
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(m)) => Ok(m),
        _ => {
            shim.inner.lock().unwrap().replies.remove(&req_id);
            Err("the guest agent did not answer".into())
        }
    }
}

async fn start(shim: &Arc<Shim>) -> Response {
    let (tx, rx) = oneshot::channel();
    {
        let mut inner = shim.inner.lock().unwrap();
        if inner.state.status != Status::Ready || inner.main != MainStream::Idle {
            return Response::err(
                format!("cannot start: container is {:?}", inner.state.status).to_lowercase(),
            );
        }
        if inner.agent_gone {
            return Response::err("cannot start: the guest agent connection is gone");
        }
        inner.main = MainStream::Starting;
        inner.starting.insert(MAIN_STREAM, tx);
    }
    slog!("start requested");
    shim.send(Frame::host(&HostMsg::Start(StartSpec {
        process: shim.spec.process.to_agent(),
        hostname: shim.spec.hostname.clone(),
        root_device: "/dev/vda".into(),
        entropy: crate::identity::host_random(64),
        realtime_ns: crate::identity::realtime_ns(),
        machine_id: hex::encode(crate::identity::host_random(16)),
        network: shim.spec.network.as_ref().map(|n| n.to_agent()),
        volumes: crate::volumes::mounts(&shim.spec),
        tmpfs: shim.spec.tmpfs.clone(),
        root_mounted: shim.root_mounted,
    })));
    let mut ex = shim.exited.subscribe();
    // `Started` reaches `rx` before a quick process's `Exited` ends the VM: look at it first,
    // or a process that exits at once would be reported as a VM that died while starting.
    let msg = tokio::select! {
        biased;
        r = tokio::time::timeout(Duration::from_secs(60), rx) => match r {
            Ok(Ok(m)) => m,
            _ => {
                shim.inner.lock().unwrap().starting.remove(&MAIN_STREAM);
                return Response::err("the guest agent did not start the process");
            }
        },
        _ = ex.wait_for(|s| s.is_some()) => return Response::err("the VM exited while starting"),
    };
    match msg {
        GuestMsg::Started { pid, .. } => {
            // Recorded (Running, started_at) by the reader as it accepted `Started`, before it
            // read anything after it: an `Exited` right behind cannot be overtaken.
            slog!("main process started, guest pid {pid}");
            Response {
                ok: true,
                pid: Some(pid),
                state: Some(shim.state()),
                ..Default::default()
            }
        }
        GuestMsg::StartFailed {
            error, exit_code, ..
        } => {
            shim.update(|s| s.started_at = Some(now()));
            shim.finish(exit_code, false, error.clone());
            Response {
                ok: false,
                error: Some(error),
                state: Some(shim.state()),
                ..Default::default()
            }
        }
        _ => Response::err("unexpected reply from the guest agent"),
    }
}

async fn wait_exit(shim: &Shim) -> State {
    let mut ex = shim.exited.subscribe();
    let r = ex.wait_for(|s| s.is_some()).await.map(|s| s.clone());
    match r {
        Ok(Some(st)) => st,
        _ => shim.state(),
    }
}

async fn stop(shim: &Arc<Shim>, signal: i32, timeout_secs: u64) -> State {
    let status = shim.state().status;
    match status {
        Status::Exited => return shim.state(),
        Status::Running => {}
        _ => {
            // Never started: nothing to signal, power the VM off.
            shim.finish(137, false, String::new());
            return wait_exit(shim).await;
        }
    }
    let mut ex = shim.exited.subscribe();
    shim.send(Frame::host(&HostMsg::Signal {
        stream: MAIN_STREAM,
        signal,
    }));
    // A paused VM gets the signal once it runs again (as Docker unpauses to stop).
    run_state::resume_if_paused(shim).await;
    let t = Duration::from_secs(timeout_secs);
    if tokio::time::timeout(t, ex.wait_for(|s| s.is_some()))
        .await
        .is_err()
    {
        slog!("stop: no exit after {timeout_secs}s, SIGKILL");
        shim.send(Frame::host(&HostMsg::Signal {
            stream: MAIN_STREAM,
            signal: 9,
        }));
        if tokio::time::timeout(Duration::from_secs(10), ex.wait_for(|s| s.is_some()))
            .await
            .is_err()
        {
            slog!("stop: agent did not report the exit, killing the VM");
            shim.kill_qemu();
            shim.finish(
                137,
                false,
                "the VM was killed after the stop timeout".into(),
            );
        }
    }
    wait_exit(shim).await
}

async fn attach(
    shim: Arc<Shim>,
    s: UnixStream,
    want_stdin: bool,
    want_out: bool,
    want_err: bool,
) -> Result<()> {
    let mut rx = shim.out.subscribe();
    let exited = shim.exited.borrow().is_some();
    let holds_stdin = want_stdin && shim.spec.process.open_stdin && {
        let mut inner = shim.inner.lock().unwrap();
        let free = !inner.stdin_held;
        inner.stdin_held = true;
        free
    };
    let (mut r, mut w) = s.into_split();
    let mut line = serde_json::to_vec(&Response::ok())?;
    line.push(b'\n');
    w.write_all(&line).await?;
    if exited {
        return Ok(());
    }
    let stdin_task = holds_stdin.then(|| {
        let shim = shim.clone();
        tokio::spawn(async move {
            let (mut started, mut exited) = (shim.started.subscribe(), shim.exited.subscribe());
            tokio::select! {
                _ = started.wait_for(|s| *s) => {}
                _ = exited.wait_for(|s| s.is_some()) => return,
            }
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !shim
                            .send_data(Frame::stdin(MAIN_STREAM, buf[..n].to_vec()))
                            .await
                        {
                            break;
                        }
                    }
                }
            }
            // Half-close of the attach that holds stdin = stdin EOF (internals.md), after the
            // data (same queue); not on a terminal, whose session just ends (Docker's rule: a
            // client that detaches leaves the process its stdin).
            if !shim.spec.process.tty {
                shim.send_data(Frame::stdin_eof(MAIN_STREAM)).await;
            }
            shim.inner.lock().unwrap().stdin_held = false;
        })
    });
    loop {
        match rx.recv().await {
            Ok(Out::Data(code, data)) => {
                if (code == 1 && !want_out) || (code == 2 && !want_err) {
                    continue;
                }
                if w.write_all(&mux_header(code, data.len())).await.is_err()
                    || w.write_all(&data).await.is_err()
                {
                    break;
                }
            }
            Ok(Out::End) | Err(broadcast::error::RecvError::Closed) => break,
            // As often as the guest's output outruns a client: rate-limited with the rest.
            Err(broadcast::error::RecvError::Lagged(n)) => {
                guest_log!(shim, "attach: a slow client skipped {n} chunks of output")
            }
        }
    }
    let _ = w.shutdown().await;
    if let Some(t) = stdin_task {
        t.abort();
        shim.inner.lock().unwrap().stdin_held = false;
    }
    Ok(())
}

/// An exec session, or any stream that behaves as one (an archive stream): `msg` is what
/// starts it on the stream allocated here. `exec_id` names an exec for `signal`/`resize`.
/// On a terminal (`tty`), the end of the client's input is not the end of the process's.
async fn exec(
    shim: Arc<Shim>,
    mut s: UnixStream,
    exec_id: Option<String>,
    msg: impl FnOnce(u32) -> HostMsg,
    want_stdin: bool,
    tty: bool,
) -> Result<()> {
    let (etx, mut erx) = mpsc::unbounded_channel();
    let (stx, srx) = oneshot::channel();
    let stream = {
        let mut inner = shim.inner.lock().unwrap();
        if inner.state.status != Status::Running {
            Err("container is not running".to_string())
        } else if inner.agent_gone {
            Err("the guest agent connection is gone".to_string())
        } else if let Some(id) = exec_id
            .as_ref()
            .filter(|id| inner.exec_ids.contains_key(*id))
        {
            Err(format!("exec {id} is already running"))
        } else {
            let id = inner.next_stream;
            inner.next_stream += 1;
            inner.execs.insert(
                id,
                ExecStream {
                    tx: etx,
                    running: false,
                    window: Window::default(),
                },
            );
            if let Some(exec_id) = &exec_id {
                inner.exec_ids.insert(exec_id.clone(), id);
            }
            inner.starting.insert(id, stx);
            Ok(id)
        }
    };
    let stream = match stream {
        Ok(id) => id,
        Err(e) => return reply(&mut s, &Response::err(e)).await,
    };
    shim.send(Frame::host(&msg(stream)));
    let started = tokio::time::timeout(Duration::from_secs(30), srx).await;
    let (pid, failed) = match started {
        Ok(Ok(GuestMsg::Started { pid, .. })) => (pid, None),
        Ok(Ok(GuestMsg::StartFailed {
            error, exit_code, ..
        })) => (0, Some((error, exit_code))),
        _ => (
            0,
            Some(("the guest agent did not start the exec".to_string(), 126)),
        ),
    };
    let mut line = serde_json::to_vec(&Response {
        ok: true,
        pid: Some(pid),
        ..Default::default()
    })?;
    line.push(b'\n');
    let (mut r, mut w) = s.into_split();
    w.write_all(&line).await?;
    if let Some((error, code)) = failed {
        {
            let mut inner = shim.inner.lock().unwrap();
            inner.execs.remove(&stream);
            if let Some(exec_id) = &exec_id {
                inner.exec_ids.remove(exec_id);
            }
            inner.starting.remove(&stream);
        }
        let msg = format!("{error}\n");
        w.write_all(&mux_header(2, msg.len())).await?;
        w.write_all(msg.as_bytes()).await?;
        let body = serde_json::to_vec(&serde_json::json!({ "exit_code": code }))?;
        w.write_all(&mux_header(EXIT_FRAME, body.len())).await?;
        w.write_all(&body).await?;
        return Ok(());
    }
    let stdin_task = want_stdin.then(|| {
        let shim = shim.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !shim
                            .send_data(Frame::stdin(stream, buf[..n].to_vec()))
                            .await
                        {
                            break;
                        }
                    }
                }
            }
            // As for attach: a terminal session's end leaves the process its stdin.
            if !tty {
                shim.send_data(Frame::stdin_eof(stream)).await;
            }
        })
    });
    let mut client_gone = false;
    while let Some(ev) = erx.recv().await {
        match ev {
            ExecEvent::Data(code, data) => {
                if !client_gone
                    && (w.write_all(&mux_header(code, data.len())).await.is_err()
                        || w.write_all(&data).await.is_err())
                {
                    client_gone = true;
                }
                shim.grant(stream, data.len() as u32);
            }
            ExecEvent::Exited(code) => {
                if !client_gone {
                    let body = serde_json::to_vec(&serde_json::json!({ "exit_code": code }))?;
                    let _ = w.write_all(&mux_header(EXIT_FRAME, body.len())).await;
                    let _ = w.write_all(&body).await;
                }
                break;
            }
        }
    }
    let _ = w.shutdown().await;
    if let Some(t) = stdin_task {
        t.abort();
    }
    Ok(())
}
