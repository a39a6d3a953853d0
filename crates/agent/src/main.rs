//! hyper-agent: PID 1 inside every Hyper microVM.
//!
//! Boot: mount the API filesystems, load the virtio modules, unshare a PID namespace for the
//! container (while still single-threaded), open the `agent` virtio-serial port and send
//! `Ready`. Then wait: no disk and no network is touched until `Start` (VM templates, DESIGN
//! decision 8). `Start` brings up the network (`network`), then the root disk (`rootfs`) and the
//! volumes (`volumes`), then the process. The protocol is in the `agent-proto` crate.

mod archive;
mod etc;
mod identity;
mod init;
mod lookup;
mod network;
mod port;
mod prepare;
mod process;
mod rehearse;
mod rootfs;
mod session;
mod tmpfs;
mod top;
mod user;
mod volumes;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::{Frame, GuestMsg, HostMsg, Kind, StartSpec, VolumeMount, PROTOCOL_VERSION};
use tokio::sync::{mpsc, oneshot};

use crate::init::log;
use crate::process::Target;
use crate::session::{Credit, Fd};
use crate::volumes::Freezer;

/// What the control loop keeps per stream.
struct Handle {
    /// Where the stream's frames go: the host, or a rehearsal's sink.
    out: mpsc::UnboundedSender<Frame>,
    pid: Option<i32>,
    stdin_tx: mpsc::UnboundedSender<Option<Vec<u8>>>,
    credit: Arc<Credit>,
    master: Option<Arc<Fd>>,
    /// A resize that arrived before the TTY existed.
    pending_size: Option<(u16, u16)>,
}

/// Reports from session tasks to the control loop.
enum Event {
    /// A process is running. The loop records it, sends `Started`, then answers on `recorded`
    /// so the session's output and `Exited` always follow `Started` on the wire.
    Started {
        stream: u32,
        pid: i32,
        master: Option<Arc<Fd>>,
        recorded: oneshot::Sender<()>,
    },
    Gone {
        stream: u32,
    },
}

fn main() {
    if std::env::args().next().as_deref() == Some(archive::HELPER_ARG0) {
        archive::helper_main();
    }
    let pid1 = std::process::id() == 1;
    if pid1 {
        init::init_pid1();
    }
    let port_name =
        std::env::var("HYPER_AGENT_PORT").unwrap_or_else(|_| agent_proto::PORT_NAME.to_string());
    let port = port::open_port(&port_name);
    // A blocking thread made at boot stays (a VM template keeps it): a start's set-up then runs
    // on it instead of paying for a new thread, which under TCG is not cheap.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(Duration::from_secs(86_400))
        .build()
        .expect("tokio runtime");
    rt.block_on(run(port));
    init::power_off();
}

fn ready() -> Frame {
    Frame::guest(&GuestMsg::Ready {
        version: PROTOCOL_VERSION,
        kernel_release: init::kernel_release(),
    })
}

async fn run(port: std::fs::File) {
    let _ = tokio::task::spawn_blocking(|| ()).await;
    let (mut frames, out) = port::start(port);
    let _ = out.send(ready());
    log!("ready");
    tokio::spawn(reaper());
    let freezer = Freezer::start();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let mut streams: HashMap<u32, Handle> = HashMap::new();
    let mut main_pid: Option<i32> = None;
    let mut started = false;
    // The container's root is mounted (by `Start` or `Mount`): archive streams may run.
    let root = RootState::default();
    loop {
        tokio::select! {
            f = frames.recv() => {
                let Some(f) = f else {
                    freezer.thaw_all().await;
                    return;
                };
                match f.kind {
                    Kind::Control => match f.host_msg() {
                        Ok(HostMsg::Shutdown) => {
                            log!("shutdown requested");
                            // A frozen volume would hold back the writes the sync is for.
                            freezer.thaw_all().await;
                            let _ = tokio::task::spawn_blocking(nix::unistd::sync).await;
                            let _ = out.send(Frame::guest(&GuestMsg::Synced));
                            // Let the writer drain what is queued, briefly.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                        Ok(m) => handle(m, &out, &ev_tx, &mut streams, main_pid, &mut started, &freezer, &root),
                        Err(e) => {
                            log!("bad control message: {e}");
                            let _ = out.send(Frame::guest(&GuestMsg::Error { req_id: 0, message: e.to_string() }));
                        }
                    },
                    Kind::Stdin => {
                        if let Some(h) = streams.get(&f.stream) {
                            let _ = h.stdin_tx.send(Some(f.payload));
                        }
                    }
                    Kind::StdinEof => {
                        if let Some(h) = streams.get(&f.stream) {
                            let _ = h.stdin_tx.send(None);
                        }
                    }
                    Kind::WindowUpdate => {
                        if let (Some(h), Ok(n)) = (streams.get(&f.stream), f.window_credit()) {
                            h.credit.grant(n);
                        }
                    }
                    Kind::Stdout | Kind::Stderr => log!("unexpected output frame from host"),
                }
            }
            Some(ev) = ev_rx.recv() => match ev {
                Event::Started { stream, pid, master, recorded } => {
                    if stream == agent_proto::MAIN_STREAM {
                        main_pid = Some(pid);
                    }
                    // The stream's handle is there until its session's task says `Gone`.
                    if let Some(h) = streams.get_mut(&stream) {
                        h.pid = Some(pid);
                        if let (Some(m), Some((w, hgt))) = (master.as_ref(), h.pending_size.take()) {
                            session::resize(m, w, hgt);
                        }
                        h.master = master;
                        let _ = h.out.send(Frame::guest(&GuestMsg::Started { stream, pid }));
                    }
                    let _ = recorded.send(());
                }
                Event::Gone { stream } => {
                    streams.remove(&stream);
                }
            }
        }
    }
}

/// Whether the container's root is mounted in the agent's namespace (set once, by the set-up
/// of `Start` or by `Mount`).
#[derive(Clone, Default)]
struct RootState(Arc<std::sync::atomic::AtomicBool>);

impl RootState {
    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    fn mounted(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[allow(clippy::too_many_arguments)]
fn handle(
    m: HostMsg,
    out: &mpsc::UnboundedSender<Frame>,
    ev: &mpsc::UnboundedSender<Event>,
    streams: &mut HashMap<u32, Handle>,
    main_pid: Option<i32>,
    started: &mut bool,
    freezer: &Freezer,
    root: &RootState,
) {
    let reply = |g: GuestMsg| {
        let _ = out.send(Frame::guest(&g));
    };
    match m {
        HostMsg::Hello { version, entropy } => {
            if version != PROTOCOL_VERSION {
                log!("host speaks protocol {version}, agent {PROTOCOL_VERSION}");
            }
            identity::reseed(&entropy);
            let _ = out.send(ready());
        }
        HostMsg::Start(StartSpec {
            process,
            hostname,
            root_device,
            entropy,
            realtime_ns,
            machine_id,
            network,
            volumes,
            tmpfs,
            root_mounted,
        }) => {
            if *started {
                reply(GuestMsg::StartFailed {
                    stream: 0,
                    error: "already started".into(),
                    exit_code: 126,
                });
                return;
            }
            *started = true;
            // Identity first, before any disk or process: the clock and the random pool.
            identity::renew(realtime_ns, &entropy);
            let setup = Setup {
                root: rootfs::Target {
                    device: root_device,
                    hostname,
                    machine_id,
                    network,
                    root_mounted,
                },
                volumes,
                tmpfs,
                freezer: freezer.clone(),
            };
            let root = root.clone();
            start_stream(
                0,
                Box::new(move || {
                    set_up(&setup)?;
                    root.set();
                    process::spawn(&process, Target::Main)
                }),
                out,
                ev,
                streams,
            );
        }
        HostMsg::Exec { stream, process } => {
            let Some(main_pid) = main_pid.filter(|_| streams.contains_key(&0)) else {
                reply(GuestMsg::StartFailed {
                    stream,
                    error: "container is not running".into(),
                    exit_code: 126,
                });
                return;
            };
            if stream == 0 || streams.contains_key(&stream) {
                reply(GuestMsg::StartFailed {
                    stream,
                    error: format!("stream {stream} in use"),
                    exit_code: 126,
                });
                return;
            }
            start_stream(
                stream,
                Box::new(move || process::spawn(&process, Target::Exec { main_pid })),
                out,
                ev,
                streams,
            );
        }
        HostMsg::Archive { stream, request } => {
            let refused = if !root.mounted() {
                Some("the container's file system is not mounted".to_string())
            } else if stream == 0 || streams.contains_key(&stream) {
                Some(format!("stream {stream} in use"))
            } else {
                None
            };
            if let Some(error) = refused {
                reply(GuestMsg::StartFailed {
                    stream,
                    error,
                    exit_code: 126,
                });
                return;
            }
            start_stream(
                stream,
                Box::new(move || archive::spawn(&request)),
                out,
                ev,
                streams,
            );
        }
        HostMsg::Mount {
            req_id,
            root_device,
            volumes,
        } => {
            if *started || rootfs::mounted_read_only() {
                reply(GuestMsg::Error {
                    req_id,
                    message: "a container has started or been prepared for here".into(),
                });
                return;
            }
            *started = true;
            let (out, root, freezer) = (out.clone(), root.clone(), freezer.clone());
            tokio::task::spawn_blocking(move || {
                let r = mount_only(&root_device, &volumes, &freezer);
                if r.is_ok() {
                    root.set();
                }
                let _ = out.send(Frame::guest(&done_or_error(req_id, r)));
            });
        }
        HostMsg::Signal { stream, signal } => {
            let Some(pid) = streams.get(&stream).and_then(|h| h.pid) else {
                return;
            };
            // SAFETY: kill with a pid we started and an integer signal.
            if unsafe { libc::kill(pid, signal) } != 0 {
                log!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
            }
        }
        HostMsg::Resize {
            stream,
            width,
            height,
        } => {
            if let Some(h) = streams.get_mut(&stream) {
                match h.master.as_ref() {
                    Some(m) => session::resize(m, width, height),
                    None => h.pending_size = Some((width, height)),
                }
            }
        }
        HostMsg::Top { req_id, ps_args: _ } => {
            let out = out.clone();
            tokio::task::spawn_blocking(move || {
                let g = match main_pid {
                    Some(pid) => {
                        let (titles, processes) = top::top(pid);
                        GuestMsg::TopReply {
                            req_id,
                            titles,
                            processes,
                        }
                    }
                    None => GuestMsg::Error {
                        req_id,
                        message: "container is not running".into(),
                    },
                };
                let _ = out.send(Frame::guest(&g));
            });
        }
        HostMsg::Stats { req_id } => {
            let out = out.clone();
            tokio::task::spawn_blocking(move || {
                let s = top::stats(main_pid);
                let _ = out.send(Frame::guest(&GuestMsg::StatsReply {
                    req_id,
                    memory_usage: s.memory_usage,
                    memory_limit: s.memory_limit,
                    cpu_total_ns: s.cpu_total_ns,
                    system_cpu_ns: s.system_cpu_ns,
                    online_cpus: s.online_cpus,
                    pids: s.pids,
                }));
            });
        }
        HostMsg::Rehearse(spec) => {
            if *started {
                reply(GuestMsg::Rehearsed {
                    millis: 0,
                    error: "a container has started here".into(),
                });
                return;
            }
            identity::renew(spec.realtime_ns, &spec.entropy);
            rehearse::start(spec, freezer, out, ev, streams);
        }
        HostMsg::PrepareRoot {
            root_device,
            process,
            preread_max,
        } => {
            let refused = if *started {
                Some("a container has started here")
            } else if rootfs::mounted_read_only() {
                Some("a root is prepared here already")
            } else {
                None
            };
            if let Some(error) = refused {
                reply(GuestMsg::Prepared {
                    millis: 0,
                    bytes: 0,
                    error: error.into(),
                });
                return;
            }
            let out = out.clone();
            tokio::task::spawn_blocking(move || {
                let msg = match prepare::run(&root_device, &process, preread_max) {
                    Ok((millis, bytes)) => GuestMsg::Prepared {
                        millis,
                        bytes,
                        error: String::new(),
                    },
                    Err(error) => GuestMsg::Prepared {
                        millis: 0,
                        bytes: 0,
                        error,
                    },
                };
                let _ = out.send(Frame::guest(&msg));
            });
        }
        HostMsg::Freeze { req_id, targets } => {
            let (out, freezer) = (out.clone(), freezer.clone());
            tokio::spawn(async move {
                let _ = out.send(Frame::guest(&done_or_error(
                    req_id,
                    freezer.freeze(targets).await,
                )));
            });
        }
        HostMsg::Thaw { req_id, targets } => {
            let (out, freezer) = (out.clone(), freezer.clone());
            tokio::spawn(async move {
                let _ = out.send(Frame::guest(&done_or_error(
                    req_id,
                    freezer.thaw(targets).await,
                )));
            });
        }
        HostMsg::SetClock { realtime_ns } => identity::set_clock(realtime_ns),
        HostMsg::Shutdown => unreachable!("handled by the loop"),
    }
}

/// `Done`, or `Error` with the whole chain.
fn done_or_error<E: std::error::Error>(req_id: u64, r: Result<(), E>) -> GuestMsg {
    match r {
        Ok(()) => GuestMsg::Done { req_id },
        Err(e) => GuestMsg::Error {
            req_id,
            message: error_chain(&e),
        },
    }
}

/// What a `Start` prepares before its process.
struct Setup {
    root: rootfs::Target,
    volumes: Vec<VolumeMount>,
    tmpfs: Vec<agent_proto::TmpfsMount>,
    /// Takes the volumes over once they are mounted (for `Freeze` and `Thaw`).
    freezer: Freezer,
}

/// The network, the root disk, then the volumes and tmpfs mounts on it. Blocking.
fn set_up(s: &Setup) -> Result<(), process::SpawnError> {
    let failed = |e: &dyn std::error::Error| process::SpawnError {
        message: error_chain(e),
        exit_code: 126,
    };
    network::setup(s.root.network.as_ref()).map_err(|e| failed(&e))?;
    rootfs::prepare(&s.root).map_err(|e| failed(&e))?;
    let mounted =
        volumes::mount_all(Path::new(rootfs::ROOTFS), &s.volumes).map_err(|e| failed(&e))?;
    s.freezer.adopt(mounted);
    tmpfs::mount_all(Path::new(rootfs::ROOTFS), &s.tmpfs).map_err(|e| failed(&e))?;
    Ok(())
}

/// The root disk and the volumes, without a process: a helper VM for a stopped container's
/// archive streams. Blocking.
fn mount_only(
    device: &str,
    volumes: &[VolumeMount],
    freezer: &Freezer,
) -> Result<(), process::SpawnError> {
    rootfs::mount_root(device).map_err(|e| process::SpawnError {
        message: error_chain(&e),
        exit_code: 126,
    })?;
    let mounted = volumes::mount_all(Path::new(rootfs::ROOTFS), volumes).map_err(|e| {
        process::SpawnError {
            message: error_chain(&e),
            exit_code: 126,
        }
    })?;
    freezer.adopt(mounted);
    Ok(())
}

/// What starts a stream's process: blocking (set-up and fork).
type Spawn = Box<dyn FnOnce() -> Result<process::Spawned, process::SpawnError> + Send>;

/// Run `spawn` for `stream` and bridge the process it starts, its frames to `out`. One
/// function for every kind of stream, not generic over `spawn`: a rehearsal's run of it is
/// then a claim's, down to the machine code that TCG translates ahead (`rehearse`).
fn start_stream(
    stream: u32,
    spawn: Spawn,
    out: &mpsc::UnboundedSender<Frame>,
    ev: &mpsc::UnboundedSender<Event>,
    streams: &mut HashMap<u32, Handle>,
) {
    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
    let credit = Credit::new();
    streams.insert(
        stream,
        Handle {
            out: out.clone(),
            pid: None,
            stdin_tx,
            credit: credit.clone(),
            master: None,
            pending_size: None,
        },
    );
    let (out, ev) = (out.clone(), ev.clone());
    tokio::spawn(async move {
        let oom_before = process::oom_kills();
        let res = tokio::task::spawn_blocking(move || {
            let t0 = std::time::Instant::now();
            let r = spawn();
            log!(
                "stream {stream}: set-up and spawn {} ms",
                t0.elapsed().as_millis()
            );
            r
        })
        .await;
        let sp = match res {
            Ok(Ok(sp)) => sp,
            Ok(Err(e)) => {
                log!("stream {stream}: start failed: {e}");
                let _ = out.send(Frame::guest(&GuestMsg::StartFailed {
                    stream,
                    error: e.message,
                    exit_code: e.exit_code,
                }));
                let _ = ev.send(Event::Gone { stream });
                return;
            }
            Err(e) => {
                let _ = out.send(Frame::guest(&GuestMsg::StartFailed {
                    stream,
                    error: e.to_string(),
                    exit_code: 126,
                }));
                let _ = ev.send(Event::Gone { stream });
                return;
            }
        };
        let pid = sp.pid;
        let exit = process::register(pid);
        let mut sp = sp;
        let master = sp.master.take().and_then(|m| Fd::new(m).ok()).map(Arc::new);
        // The control loop records the pid (and TTY) and only then sends `Started`, so a host
        // that acts on `Started` (an exec, a resize, a signal) always finds the stream running.
        let (recorded, was_recorded) = oneshot::channel();
        let _ = ev.send(Event::Started {
            stream,
            pid,
            master: master.clone(),
            recorded,
        });
        let _ = was_recorded.await;
        log!("stream {stream}: started pid {pid}");
        let exit = session::Exit {
            code: exit,
            oom_before,
        };
        session::run(stream, sp, master, exit, stdin_rx, credit, out).await;
        log!("stream {stream}: exited");
        let _ = ev.send(Event::Gone { stream });
    });
}

/// "error: cause: cause" for an error and its sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reap children on SIGCHLD; a reap skipped during a spawn is retried shortly after. No timer
/// runs while nothing exits: an idle guest under TCG pays for every wake-up.
async fn reaper() {
    let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    loop {
        match sig.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => tokio::time::sleep(Duration::from_millis(250)).await,
        }
        while !process::reap() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
