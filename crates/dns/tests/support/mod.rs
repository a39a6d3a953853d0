//! Running the real `hyper-dns` on loopback addresses and asking it questions.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::ops::Deref;
use std::time::{Duration, Instant};

use daemon_test_kit::Daemon;
pub use daemon_test_kit::Scratch;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `hyper-dns` (config, pidfile and log in its scratch directory), killed on drop
/// (also when the test panics).
pub struct Server {
    daemon: Daemon,
    pub port: u16,
}

impl Server {
    /// Starts in the foreground and returns once it has bound its listeners (pidfile written).
    pub fn start(config: &serde_json::Value, port: u16) -> Self {
        let server = Self {
            daemon: Daemon::spawn(BINARY, Scratch::new(), config, &port_flag(port)),
            port,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !server.is_serving() {
            assert!(
                Instant::now() < deadline,
                "hyper-dns did not start; log:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Starts with `--daemon` and returns once the launching process has exited.
    pub fn start_daemon(config: &serde_json::Value, port: u16) -> Self {
        let (status, daemon) = Daemon::launch(BINARY, Scratch::new(), config, &port_flag(port));
        assert!(status.success(), "hyper-dns --daemon exited with {status}");
        Self { daemon, port }
    }

    pub fn at(&self, address: &str) -> SocketAddr {
        SocketAddr::new(address.parse().unwrap(), self.port)
    }
}

/// The pidfile, log, scratch directory and reload of the process.
impl Deref for Server {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

const BINARY: &str = env!("CARGO_BIN_EXE_hyper-dns");

fn port_flag(port: u16) -> [String; 2] {
    ["--port".into(), port.to_string()]
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
    try_udp_from(Ipv4Addr::LOCALHOST, server, name, kind)
}

/// One query over UDP sent from `source` (a loopback address).
pub fn try_udp_from(
    source: Ipv4Addr,
    server: SocketAddr,
    name: &str,
    kind: RecordType,
) -> Option<Message> {
    let query = query_message(name, kind);
    let socket = UdpSocket::bind((source, 0)).unwrap();
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
