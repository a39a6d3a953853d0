//! Running the real `hyper-dns` on loopback addresses and asking it questions.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A scratch directory for one server's config, pidfile and log, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hyper-dns-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `hyper-dns`, killed on drop (also when the test panics).
pub struct Server {
    pub scratch: Scratch,
    pub port: u16,
    child: Option<Child>,
    /// For `--daemon`, where the child is not ours to wait on.
    daemon_pid: Option<Pid>,
}

impl Server {
    /// Starts in the foreground and returns once it has bound its listeners (pidfile written).
    pub fn start(config: &serde_json::Value, port: u16) -> Self {
        let scratch = Scratch::new();
        write_config(&scratch.path("config.json"), config);
        let child = Command::new(env!("CARGO_BIN_EXE_hyper-dns"))
            .args(flags(&scratch, port))
            .spawn()
            .unwrap();
        let server = Self {
            scratch,
            port,
            child: Some(child),
            daemon_pid: None,
        };
        server.wait_for_pidfile();
        server
    }

    /// Starts with `--daemon` and returns once the launching process has exited.
    pub fn start_daemon(config: &serde_json::Value, port: u16) -> Self {
        let scratch = Scratch::new();
        write_config(&scratch.path("config.json"), config);
        let status = Command::new(env!("CARGO_BIN_EXE_hyper-dns"))
            .args(flags(&scratch, port))
            .arg("--daemon")
            .status()
            .unwrap();
        assert!(status.success(), "hyper-dns --daemon exited with {status}");
        let mut server = Self {
            scratch,
            port,
            child: None,
            daemon_pid: None,
        };
        server.daemon_pid = Some(server.pid());
        server
    }

    pub fn pid(&self) -> Pid {
        let text = std::fs::read_to_string(self.scratch.path("pid")).unwrap();
        Pid::from_raw(text.trim().parse().unwrap())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path("log")).unwrap_or_default()
    }

    /// Replaces the config the way hyperd does (temp + rename) and sends SIGHUP.
    pub fn reload(&self, config: &serde_json::Value) {
        write_config(&self.scratch.path("config.json"), config);
        kill(self.pid(), Signal::SIGHUP).unwrap();
    }

    pub fn at(&self, address: &str) -> SocketAddr {
        SocketAddr::new(address.parse().unwrap(), self.port)
    }

    fn wait_for_pidfile(&self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !self.scratch.path("pid").exists() {
            assert!(
                Instant::now() < deadline,
                "hyper-dns did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = self.daemon_pid {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn flags(scratch: &Scratch, port: u16) -> Vec<String> {
    let path = |name| scratch.path(name).display().to_string();
    vec![
        "--config".into(),
        path("config.json"),
        "--pidfile".into(),
        path("pid"),
        "--log".into(),
        path("log"),
        "--port".into(),
        port.to_string(),
    ]
}

fn write_config(path: &Path, config: &serde_json::Value) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, config.to_string()).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// A port the kernel just handed out on loopback, free for UDP and TCP at the time of asking.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

pub fn query_message(name: &str, kind: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        kind,
    ));
    message
}

/// One query over UDP; panics if no reply comes within the client timeout.
pub fn ask_udp(server: SocketAddr, name: &str, kind: RecordType) -> Message {
    try_udp(server, name, kind).unwrap_or_else(|| panic!("no udp reply from {server} for {name}"))
}

pub fn try_udp(server: SocketAddr, name: &str, kind: RecordType) -> Option<Message> {
    let query = query_message(name, kind);
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    socket.connect(server).unwrap();
    socket.send(&query.to_vec().unwrap()).unwrap();
    let mut buf = [0; 4096];
    let len = socket.recv(&mut buf).ok()?;
    let reply = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    Some(reply)
}

/// One query over TCP (RFC 7766 framing).
pub fn ask_tcp(server: SocketAddr, name: &str, kind: RecordType) -> Message {
    let query = query_message(name, kind).to_vec().unwrap();
    let mut stream = TcpStream::connect_timeout(&server, CLIENT_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let mut frame = (query.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&query);
    stream.write_all(&frame).unwrap();
    let mut len = [0; 2];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).unwrap();
    Message::from_vec(&reply).unwrap()
}

/// Whether anything accepts TCP on `server` (a refused connect answers at once on loopback).
pub fn listens_tcp(server: SocketAddr) -> bool {
    TcpStream::connect_timeout(&server, CLIENT_TIMEOUT).is_ok()
}

/// The IPv4 addresses of the answer; panics unless the response code is NOERROR.
pub fn addresses(reply: &Message) -> Vec<IpAddr> {
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{reply:?}"
    );
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Retries `check` until it holds: a reload is applied shortly after SIGHUP, not during it.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
