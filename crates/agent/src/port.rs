//! The virtio-serial port to the host. The port can be opened only once (a second open is
//! EBUSY), read() returns EOF whenever no host is connected, and write() blocks until one is. So
//! one fd, served by two plain threads: a reader that polls through disconnects and a writer
//! that may block; both talk to the async side over channels.
//!
//! Both descriptors of the port are close-on-exec (std opens with O_CLOEXEC, `try_clone` dups
//! with F_DUPFD_CLOEXEC): a container process must never hold the host channel. `process`
//! also marks every inherited descriptor above 2 close-on-exec before it execs anything, so a
//! descriptor opened without the flag cannot leak either.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use agent_proto::Frame;
use tokio::sync::mpsc;

use crate::init::log;

/// Find `/dev/vportNpM` for the port named `name` via /sys/class/virtio-ports/*/name.
pub fn find_port(name: &str) -> Option<PathBuf> {
    let rd = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for e in rd.flatten() {
        let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            return Some(PathBuf::from("/dev").join(e.file_name()));
        }
    }
    None
}

/// Wait (forever, logging now and then) for the port to appear and open it (close-on-exec).
pub fn open_port(name: &str) -> std::fs::File {
    let mut tries = 0u64;
    loop {
        if let Some(p) = find_port(name) {
            match std::fs::OpenOptions::new().read(true).write(true).open(&p) {
                Ok(f) => return f,
                Err(e) if tries.is_multiple_of(50) => log!("open {}: {e}", p.display()),
                Err(_) => {}
            }
        } else if tries.is_multiple_of(50) && tries > 0 {
            log!("waiting for virtio-serial port {name:?}");
        }
        tries += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start the reader and writer threads on `port`. Frames read go to the returned receiver;
/// frames sent on the returned sender are written in order.
pub fn start(
    port: std::fs::File,
) -> (mpsc::UnboundedReceiver<Frame>, mpsc::UnboundedSender<Frame>) {
    // F_DUPFD_CLOEXEC: a plain dup(2) would give a descriptor every container process
    // inherits (the hole of issue 17).
    let mut wport = port.try_clone().expect("dup port fd");
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Frame>();
    std::thread::Builder::new()
        .name("port-reader".into())
        .spawn(move || read_loop(port, in_tx))
        .expect("spawn reader");
    std::thread::Builder::new()
        .name("port-writer".into())
        .spawn(move || {
            while let Some(f) = out_rx.blocking_recv() {
                let buf = f.encode();
                loop {
                    match wport.write_all(&buf) {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            // Host gone mid-write: wait and retry this frame.
                            log!("port write: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            }
        })
        .expect("spawn writer");
    (in_rx, out_tx)
}

fn read_loop(mut port: std::fs::File, tx: mpsc::UnboundedSender<Frame>) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut connected = false;
    loop {
        match port.read(&mut chunk) {
            Ok(0) => {
                // No host connected: a new connection starts a fresh byte stream.
                if connected {
                    log!("host disconnected");
                    connected = false;
                }
                buf.clear();
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(n) => {
                connected = true;
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match Frame::decode(&buf) {
                        Ok(Some((f, used))) => {
                            buf.drain(..used);
                            if tx.send(f).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // No way to resynchronise within this stream: drop what we have.
                            log!("bad frame from host: {e}; discarding {} bytes", buf.len());
                            buf.clear();
                            break;
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log!("port read: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
