//! A real etcd (Debian's `etcd-server`) started on loopback in a directory of its own, for
//! tests and benchmarks: `EtcdServer::start()`, then `endpoint()`; dropping it stops the
//! process and removes the directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to tell someone whose machine lacks etcd.
pub const INSTALL_HINT: &str =
    "etcd is not installed: install Debian's etcd-server (`apt-get install etcd-server`, or run scripts/deps)";

pub struct EtcdServer {
    child: Child,
    dir: PathBuf,
    bin: PathBuf,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The etcd binary: `ETCD_BIN`, else `etcd` on the PATH (or /usr/bin/etcd).
fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

impl EtcdServer {
    /// Starts an etcd on free loopback ports, in a fresh directory under the system's temp
    /// dir, and waits until it answers `/health`. Panics (a test's loud failure) when etcd is
    /// not installed or does not come up, with its log.
    pub fn start() -> EtcdServer {
        // A free port can be taken by another process (another test's etcd) between the
        // look and etcd's bind: new ports then.
        let mut tries = 0;
        loop {
            match Self::try_start() {
                Ok(s) => return s,
                Err(e) if e.contains("address already in use") && tries < 5 => tries += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }

    pub fn try_start() -> Result<EtcdServer, String> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let bin = etcd_binary().ok_or_else(|| INSTALL_HINT.to_string())?;
        let dir = std::env::temp_dir().join(format!(
            "etcd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let (client_port, peer_port) = (
            free_port().map_err(|e| e.to_string())?,
            free_port().map_err(|e| e.to_string())?,
        );
        let child = spawn(&bin, &dir, client_port, peer_port)?;
        let mut server = EtcdServer {
            child,
            dir,
            bin,
            client_port,
            peer_port,
        };
        server.wait_healthy()?;
        Ok(server)
    }

    /// Stops etcd (SIGKILL: as a crash would), keeping its data.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts it again on the same ports and data, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        match spawn(&self.bin, &self.dir, self.client_port, self.peer_port) {
            Ok(child) => self.child = child,
            Err(e) => panic!("{e}"),
        }
        if let Err(e) = self.wait_healthy() {
            panic!("{e}");
        }
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "etcd exited ({status}) while starting:\n{}",
                    self.log()
                ));
            }
            if health(self.client_port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd on 127.0.0.1:{} not healthy after 30 s:\n{}",
                    self.client_port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`, as `EtcdStore` and hyperd's `--store etcd://` take it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// etcd's own log, for a failure's diagnostics.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

fn spawn(bin: &Path, dir: &Path, client_port: u16, peer_port: u16) -> Result<Child, String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .map_err(|e| e.to_string())?;
    Command::new(bin)
        .arg("--name")
        .arg("test")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .arg("--initial-cluster")
        .arg(format!("test={peer}"))
        .args(["--logger", "zap", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start {}: {e} ({INSTALL_HINT}?)", bin.display()))
}

/// etcd's `/health` (served over HTTP/1 on the client port) says it has a leader.
fn health(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut reply = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut reply).is_ok()
        && reply.contains("\"health\":\"true\"")
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
