//! hyper-hostile-guest: a test-only guest PID 1 that speaks the agent protocol with hostile
//! intent, for `crates/shim/tests/hostile.rs`. Built only with `--features hostile-guest` (the
//! test builds it and packs it into an initramfs of its own); never part of the product's
//! initramfs.
//!
//! It boots like the agent (modules, then the `agent` port), answers `Hello` with `Ready`, and
//! then, driven by what the host asks, sends what a compromised guest kernel could: forged
//! `Exited`/`Started` for streams the host never opened, replies for requests never made,
//! output for unknown streams, unknown frame kinds, huge strings (with newlines, to forge shim
//! log lines), JSON that amplifies when parsed, a flood of small frames while it stops reading
//! the host's window updates, output beyond the granted window and an oversized length; told
//! to sync its disks at its end, it spins instead. Each phase ends with a `hostile: ...` line on
//! the console for the test to wait on.

#[allow(dead_code)]
#[path = "../src/init.rs"]
mod init;
#[allow(dead_code)]
#[path = "../src/port.rs"]
mod port;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use agent_proto::{encode_header, Frame, GuestMsg, HostMsg, Kind, INITIAL_WINDOW, MAX_PAYLOAD};

use crate::init::log;

/// How long the flood lasts (after the host's `Signal`).
const FLOOD: Duration = Duration::from_secs(6);

/// "error: cause: cause", as the agent's (init.rs reports with it).
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

struct Guest {
    port: std::fs::File,
}

impl Guest {
    fn raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.port.write_all(bytes) {
            log!("hostile: write: {e}");
        }
    }
    fn frame(&mut self, f: &Frame) {
        self.raw(&f.encode());
    }
    fn msg(&mut self, m: &GuestMsg) {
        self.frame(&Frame::guest(m));
    }
    fn control_json(&mut self, json: &[u8]) {
        self.frame(&Frame::new(Kind::Control, 0, json.to_vec()));
    }

    /// A string of `len` bytes that tries to start a forged line in the shim's log.
    fn injection(len: usize) -> String {
        let line =
            "x\n2099-01-01T00:00:00.000000000Z FORGED shim line: main process exited: code 0\n";
        line.repeat(len / line.len() + 1)[..len].to_string()
    }

    /// Before `Start`: nothing here may change the container's state or reach its log.
    fn junk_before_start(&mut self) {
        // As large as fits in one frame, JSON escapes (the injection's newlines) included.
        let big = MAX_PAYLOAD * 3 / 4;
        self.msg(&GuestMsg::Exited {
            stream: 0,
            exit_code: 42,
            oom_killed: true,
        });
        self.msg(&GuestMsg::Started { stream: 0, pid: 1 });
        self.msg(&GuestMsg::StartFailed {
            stream: 0,
            error: Self::injection(big),
            exit_code: 3,
        });
        self.frame(&Frame::stdout(0, b"FORGED-BEFORE-START\n".to_vec()));
        self.frame(&Frame::stderr(3, b"FORGED-UNKNOWN-STREAM\n".to_vec()));
        self.msg(&GuestMsg::Exited {
            stream: 7,
            exit_code: 42,
            oom_killed: false,
        });
        self.msg(&GuestMsg::Synced);
        self.msg(&GuestMsg::Error {
            req_id: 0,
            message: Self::injection(big),
        });
        // `[[],[],...]`: 3 bytes of JSON per vector, 24 bytes of memory each once parsed.
        let mut top = br#"{"type":"top_reply","req_id":12345,"titles":[],"processes":["#.to_vec();
        while top.len() < MAX_PAYLOAD - 64 {
            top.extend_from_slice(b"[],");
        }
        top.extend_from_slice(b"[]]}");
        self.control_json(&top);
        self.msg(&GuestMsg::Done { req_id: 1 });
        self.msg(&GuestMsg::StatsReply {
            req_id: 2,
            memory_usage: u64::MAX,
            memory_limit: 1,
            cpu_total_ns: u64::MAX,
            system_cpu_ns: 0,
            online_cpus: u32::MAX,
            pids: u64::MAX,
        });
        // Unknown kind, as large as a frame may be.
        let mut unknown = encode_header(Kind::Control, 0, MAX_PAYLOAD as u32).to_vec();
        unknown[0] = 250;
        unknown.resize(unknown.len() + MAX_PAYLOAD, b'U');
        self.raw(&unknown);
        // Host-bound kinds, a bad window update.
        self.frame(&Frame::stdin(0, b"FORGED-STDIN\n".to_vec()));
        self.frame(&Frame::stdin_eof(0));
        self.frame(&Frame::new(Kind::WindowUpdate, 0, vec![1, 2, 3]));
        // Control frames that are not messages, or whose error would quote a huge string.
        self.control_json(b"{{{");
        let z = "z".repeat(big);
        self.control_json(format!(r#"{{"type":"{z}"}}"#).as_bytes());
        self.control_json(
            format!(r#"{{"type":"exited","stream":"{z}","exit_code":1}}"#).as_bytes(),
        );
        self.msg(&GuestMsg::Ready {
            version: 99,
            kernel_release: Self::injection(big),
        });
        self.msg(&GuestMsg::Rehearsed {
            millis: 1,
            error: Self::injection(1000),
        });
        self.msg(&GuestMsg::Prepared {
            millis: 1,
            bytes: u64::MAX,
            error: Self::injection(1000),
        });
        log!("hostile: junk sent before start");
    }

    /// After `Start`: the main process runs; nothing here may end it or reach its log.
    fn junk_after_start(&mut self) {
        self.msg(&GuestMsg::Started { stream: 0, pid: 2 });
        self.msg(&GuestMsg::StartFailed {
            stream: 0,
            error: "FORGED".into(),
            exit_code: 42,
        });
        for stream in [1, 5, 1 << 31] {
            self.msg(&GuestMsg::Exited {
                stream,
                exit_code: 42,
                oom_killed: true,
            });
            self.msg(&GuestMsg::Started { stream, pid: 3 });
        }
        self.frame(&Frame::stdout(2, b"FORGED-EXEC-STREAM\n".to_vec()));
        self.msg(&GuestMsg::Error {
            req_id: 777,
            message: Self::injection(200_000),
        });
        self.msg(&GuestMsg::Done { req_id: 777 });
        self.msg(&GuestMsg::TopReply {
            req_id: 777,
            titles: vec!["FORGED".into()],
            processes: vec![],
        });
        log!("hostile: junk sent after start");
    }

    /// An exec: an `Exited` before `Started`, output, an impossible exit code, a second `Exited`.
    fn exec(&mut self, stream: u32) {
        self.msg(&GuestMsg::Exited {
            stream,
            exit_code: 99,
            oom_killed: false,
        });
        self.msg(&GuestMsg::Started { stream, pid: 7 });
        self.frame(&Frame::stdout(stream, b"exec-out\n".to_vec()));
        self.msg(&GuestMsg::Exited {
            stream,
            exit_code: 300,
            oom_killed: false,
        });
        self.msg(&GuestMsg::Exited {
            stream,
            exit_code: 0,
            oom_killed: false,
        });
        log!("hostile: exec {stream} answered");
    }

    /// `Top`: wrong reply kinds first, then a reply as large as a frame may carry.
    fn top(&mut self, req_id: u64) {
        self.msg(&GuestMsg::Done { req_id });
        self.msg(&GuestMsg::StatsReply {
            req_id,
            memory_usage: 1,
            memory_limit: 1,
            cpu_total_ns: 1,
            system_cpu_ns: 1,
            online_cpus: 1,
            pids: 1,
        });
        let titles: Vec<String> = (0..200).map(|i| format!("T{i}")).collect();
        let cell = "c".repeat(5000);
        let mut processes = Vec::new();
        let mut size = 0;
        while size < MAX_PAYLOAD - 64 * 1024 {
            let row: Vec<String> = (0..10).map(|_| cell.clone()).collect();
            size += 10 * (cell.len() + 3);
            processes.push(row);
        }
        self.msg(&GuestMsg::TopReply {
            req_id,
            titles,
            processes,
        });
        log!("hostile: top answered");
    }

    /// Small frames as fast as the port takes them, without reading what the host sends (its
    /// window updates pile up on its side), with a window's worth of output now and then.
    fn flood(&mut self, reading: &AtomicBool) {
        reading.store(false, Ordering::SeqCst);
        let one = Frame::stdout(0, vec![b'x']).encode();
        let mut junk = Vec::new();
        junk.extend(Frame::stdout(99, vec![b'y'; 16]).encode());
        let mut unknown = encode_header(Kind::Control, 3, 16).to_vec();
        unknown[0] = 77;
        unknown.extend([0u8; 16]);
        junk.extend(unknown);
        let window = Frame::stdout(0, vec![b'w'; INITIAL_WINDOW as usize / 2]).encode();
        let end = Instant::now() + FLOOD;
        let (mut frames, mut i, mut batches) = (0u64, 0u64, 0u64);
        let mut buf = Vec::with_capacity(128 * 1024);
        while Instant::now() < end {
            buf.clear();
            while buf.len() < 64 * 1024 {
                buf.extend_from_slice(&one);
                frames += 1;
                i += 1;
                if i.is_multiple_of(64) {
                    buf.extend_from_slice(&junk);
                    buf.extend(
                        Frame::guest(&GuestMsg::Exited {
                            stream: 1_000_000 + i as u32,
                            exit_code: 42,
                            oom_killed: false,
                        })
                        .encode(),
                    );
                    buf.extend(
                        Frame::guest(&GuestMsg::Error {
                            req_id: (1 << 40) + i,
                            message: "flood".into(),
                        })
                        .encode(),
                    );
                    frames += 4;
                }
            }
            batches += 1;
            if batches.is_multiple_of(16) {
                buf.extend_from_slice(&window);
                frames += 1;
            }
            self.raw(&buf);
        }
        reading.store(true, Ordering::SeqCst);
        log!("hostile: flood done, {frames} frames");
    }

    /// Output beyond any window, then what must never be read: an oversized length and a
    /// forged exit.
    fn violate(&mut self) {
        self.frame(&Frame::stdout(0, vec![b'v'; 2 * INITIAL_WINDOW as usize]));
        log!("hostile: violation sent");
        self.raw(&encode_header(Kind::Stdout, 0, u32::MAX));
        self.msg(&GuestMsg::Exited {
            stream: 0,
            exit_code: 42,
            oom_killed: false,
        });
    }
}

/// Frames from the host, while `reading` is set.
fn read_loop(mut port: std::fs::File, tx: mpsc::Sender<Frame>, reading: Arc<AtomicBool>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if !reading.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match port.read(&mut chunk) {
            Ok(0) => {
                buf.clear();
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some((f, used))) = Frame::decode(&buf) {
                    buf.drain(..used);
                    if tx.send(f).is_err() {
                        return;
                    }
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn main() {
    if std::process::id() == 1 {
        init::init_pid1();
    }
    let port = port::open_port(agent_proto::PORT_NAME);
    let reader = port.try_clone().expect("dup port");
    let reading = Arc::new(AtomicBool::new(true));
    let (tx, rx) = mpsc::channel();
    {
        let reading = reading.clone();
        std::thread::spawn(move || read_loop(reader, tx, reading));
    }
    let mut g = Guest { port };
    let ready = GuestMsg::Ready {
        version: agent_proto::PROTOCOL_VERSION,
        kernel_release: init::kernel_release(),
    };
    g.msg(&ready);
    log!("hostile: ready");
    let mut junk_sent = false;
    while let Ok(f) = rx.recv() {
        let Ok(m) = f.host_msg() else {
            continue;
        };
        match m {
            HostMsg::Hello { .. } => {
                g.msg(&ready);
                if !junk_sent {
                    junk_sent = true;
                    g.junk_before_start();
                }
            }
            HostMsg::Start { .. } => {
                g.msg(&GuestMsg::Started {
                    stream: 0,
                    pid: 4242,
                });
                g.frame(&Frame::stdout(0, b"REAL-OUTPUT\n".to_vec()));
                g.junk_after_start();
            }
            HostMsg::Exec { stream, .. } => g.exec(stream),
            HostMsg::Top { req_id, .. } => g.top(req_id),
            HostMsg::Stats { req_id } => g.msg(&GuestMsg::StatsReply {
                req_id,
                memory_usage: u64::MAX,
                memory_limit: u64::MAX,
                cpu_total_ns: u64::MAX,
                system_cpu_ns: u64::MAX,
                online_cpus: u32::MAX,
                pids: u64::MAX,
            }),
            HostMsg::Signal { signal: 10, .. } => {
                g.flood(&reading);
                g.violate();
            }
            // The main process ends when asked; then, told to sync, the guest spins instead,
            // for ever.
            HostMsg::Signal { signal: 15, .. } => g.msg(&GuestMsg::Exited {
                stream: 0,
                exit_code: 0,
                oom_killed: false,
            }),
            HostMsg::Shutdown => {
                log!("hostile: spinning instead of syncing");
                loop {
                    std::hint::spin_loop();
                }
            }
            _ => {}
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
