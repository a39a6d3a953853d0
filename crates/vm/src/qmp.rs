//! A small blocking QMP client (QEMU Machine Protocol: one JSON object per line over a unix
//! socket), enough for VM templates: capabilities, `stop`/`cont`, migration, and `getfd`, which
//! hands QEMU a file descriptor with `SCM_RIGHTS`.
//!
//! Why `getfd` + `fd:` migration: QEMU runs under `-sandbox ...,spawn=deny` and chrooted into
//! the VM's directory, so it can neither run `exec:cat` nor open the template's files by path
//! once it is running (QEMU 7.2 has no `file:` URI either). The caller opens the state file and
//! passes the descriptor; QEMU only ever reads or writes that one open file.
//!
//! Asynchronous events (`{"event":...}`) that arrive between replies are kept in
//! [`Qmp::events`] so a caller can look for `MIGRATION` or `STOP`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("connecting to QMP at {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP i/o")]
    Io(#[from] std::io::Error),
    #[error("QMP closed the connection (QEMU exited?)")]
    Closed,
    #[error("QMP sent something that is not JSON: {0:?}")]
    BadJson(String),
    #[error("QMP command {command} failed: {message}")]
    Command { command: String, message: String },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// One QMP connection, past the greeting and `qmp_capabilities`.
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// Events received while waiting for replies, oldest first.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connect to `path`, retrying until `timeout` (QEMU creates the socket during its start-up),
    /// and negotiate capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        source: e,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        stream.set_read_timeout(Some(timeout.max(Duration::from_secs(1))))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut q = Qmp {
            stream,
            reader,
            events: Vec::new(),
        };
        let greeting = q.read_value()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::BadJson(greeting.to_string()));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read_value(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|_| QmpError::BadJson(line.trim_end().to_string()))
    }

    fn read_reply(&mut self, command: &str) -> Result<Value, QmpError> {
        loop {
            let v = self.read_value()?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(QmpError::Command {
                    command: command.to_string(),
                    message: e
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                        .to_string(),
                });
            }
            return Err(QmpError::BadJson(v.to_string()));
        }
    }

    /// Run one command and return its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut line = serde_json::to_vec(&msg).expect("json");
        line.push(b'\n');
        self.stream.write_all(&line)?;
        self.read_reply(command)
    }

    /// `getfd`: give QEMU a duplicate of `fd` under `name` (sent with `SCM_RIGHTS`).
    pub fn send_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.execute_with_fd("getfd", json!({ "fdname": name }), fd)
            .map(|_| ())
    }

    /// `command` with a duplicate of `fd` attached (`SCM_RIGHTS`), for `getfd` and `add-fd`.
    pub fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Value,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, QmpError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let msg = serde_json::to_vec(&json!({ "execute": command, "arguments": arguments }))
            .expect("json");
        let mut line = msg;
        line.push(b'\n');
        let fds = [fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(&line)];
        let sent = sendmsg::<()>(
            self.stream.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .map_err(std::io::Error::from)?;
        if sent < line.len() {
            // The descriptor travelled with the first byte; the rest is plain data.
            self.stream.write_all(&line[sent..])?;
        }
        self.read_reply(command)
    }

    /// Poll `query-migrate` until the migration is `completed` (Ok) or `failed`/`cancelled`
    /// (Err), or `timeout` passes.
    pub fn wait_migration(&mut self, timeout: Duration) -> Result<(), QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.execute("query-migrate", json!({}))?;
            match r.get("status").and_then(Value::as_str).unwrap_or("") {
                "completed" => return Ok(()),
                s @ ("failed" | "cancelled") => {
                    let why = r
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(QmpError::Command {
                        command: "migrate".into(),
                        message: format!("{s}: {why}"),
                    });
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(QmpError::Timeout(timeout, "the migration".into()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The VM's run state (`query-status`), e.g. "running", "paused", "inmigrate".
    pub fn status(&mut self) -> Result<String, QmpError> {
        let r = self.execute("query-status", json!({}))?;
        Ok(r.get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string())
    }
}
