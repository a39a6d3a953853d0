//! The agent connection, read as hostile input.
//!
//! The guest kernel and everything in the VM belong to the tenant (DESIGN decision 12): what
//! arrives on the agent socket may be anything a compromised guest can write. So before the
//! shim acts on a frame:
//!
//! * Size: a header's length is checked before anything is allocated (at most
//!   [`agent_proto::MAX_PAYLOAD`]); a larger one, or output beyond the credit the shim granted,
//!   is a protocol violation after which the shim stops reading (the socket's buffer then holds
//!   the guest back: bounded). Frames of unknown kinds, host-bound kinds and frames for streams
//!   that are not open are dropped.
//! * Streams: `Started`/`StartFailed` count only for a stream the shim is starting (stream 0
//!   after `Start`, an exec stream the shim allocated); output and `Exited` only for a stream
//!   the guest has started and not ended. So a guest cannot end the container before it
//!   started, end it twice, or touch an exec it was never given.
//! * Replies (`TopReply`, `StatsReply`, `Done`, `Error`) count only for an outstanding request
//!   of the matching kind; a `top_reply` (whose JSON can cost many times its size once parsed)
//!   is not even parsed otherwise. `Synced` counts only after `Shutdown`.
//! * Values: exit codes outside what a process can have become 255; strings are capped before
//!   they are stored or answered ([`MAX_ERROR_TEXT`], [`cap_top`]), and logged only as short,
//!   escaped excerpts, so a guest cannot write lines of its own into shim.log. Lines about
//!   misbehaviour are rate-limited ([`RateLimit`]).
//! * Memory the guest can make the shim hold: window updates are coalesced per stream (a guest
//!   that never reads its port costs an integer, not a frame per grant); stdin waits on a
//!   bounded queue; the main stream's output is broadcast to attachers in chunks of at most
//!   [`OUT_CHUNK`] through a ring of [`OUT_QUEUE`]; an exec stream holds at most its window.
//! * Billing: nothing the guest sends is billed. Metering (hyperd's `node::metering`) reads only
//!   `started_at`/`finished_at`, the shim's own clock when it accepted `Started` and when it
//!   recorded the end; `StatsReply` numbers are only shown (`docker stats`).

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_proto::{Frame, GuestMsg, Incoming, Kind, INITIAL_WINDOW, MAIN_STREAM};
use serde::Deserialize;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::{now, ExecEvent, ExecStream, Out, Shim};
use crate::log::Stream;
use crate::Status;

/// Control frames queued for the guest before the shim drops them (the guest is not reading).
pub(super) const CONTROL_QUEUE: usize = 1024;
/// Stdin frames (of at most 32 KiB) queued for the guest before stdin waits.
pub(super) const DATA_QUEUE: usize = 16;
/// Main-stream output chunks kept for attachers that lag (a slow one skips, as before).
pub(super) const OUT_QUEUE: usize = 512;
/// Largest chunk of output in that ring: [`OUT_QUEUE`] x this bounds it (16 MiB).
pub(super) const OUT_CHUNK: usize = 32 * 1024;
/// Guest-chosen text (an error, a start failure) kept in state.json or answered to hyperd.
pub(super) const MAX_ERROR_TEXT: usize = 4096;
/// Guest-chosen text quoted in one shim.log line.
const MAX_LOGGED: usize = 160;
/// Lines about guest misbehaviour per minute and VM; the rest are counted, then summed up.
pub(super) const LOG_LINES_PER_MINUTE: u32 = 20;
/// `top` answers: columns, rows, bytes per cell, bytes in all.
const TOP_MAX_COLUMNS: usize = 64;
const TOP_MAX_ROWS: usize = 8192;
const TOP_MAX_CELL: usize = 1024;
const TOP_MAX_BYTES: usize = 512 * 1024;

/// Where the main process is, as far as the guest has said within the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum MainStream {
    /// Not asked to start.
    #[default]
    Idle,
    /// `Start` sent, no answer yet.
    Starting,
    /// `Started` accepted: output and one `Exited` may come.
    Running,
    /// Ended (exited, failed to start, or the VM went).
    Done,
}

/// The reply a request takes (an `Error` answers any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Top,
    Stats,
    /// `Freeze`, `Thaw`.
    Done,
}

impl Expect {
    fn accepts(self, m: &GuestMsg) -> bool {
        matches!(
            (self, m),
            (_, GuestMsg::Error { .. })
                | (Expect::Top, GuestMsg::TopReply { .. })
                | (Expect::Stats, GuestMsg::StatsReply { .. })
                | (Expect::Done, GuestMsg::Done { .. })
        )
    }
}

/// Output credit the guest has on one stream: it starts at [`INITIAL_WINDOW`], each byte of
/// output takes from it, each grant of the shim gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    avail: u32,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            avail: INITIAL_WINDOW,
        }
    }
}

impl Window {
    /// Take `n` bytes; false (nothing taken) when the guest has less credit than that.
    pub(super) fn take(&mut self, n: usize) -> bool {
        match u32::try_from(n) {
            Ok(n) if n <= self.avail => {
                self.avail -= n;
                true
            }
            _ => false,
        }
    }

    /// Give back `n` bytes (never more than a whole window in all).
    pub(super) fn grant(&mut self, n: u32) {
        self.avail = self.avail.saturating_add(n).min(INITIAL_WINDOW);
    }
}

/// At most `per_window` lines per `window`; what is held back is counted and reported with
/// the next line let through.
pub(super) struct RateLimit {
    per_window: u32,
    window: Duration,
    start: Option<Instant>,
    count: u32,
    suppressed: u64,
}

impl RateLimit {
    pub(super) fn per_minute(n: u32) -> RateLimit {
        RateLimit {
            per_window: n,
            window: Duration::from_secs(60),
            start: None,
            count: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be written at `now`, and how many were held back before it (to be
    /// said first).
    pub(super) fn check(&mut self, now: Instant) -> (bool, u64) {
        if self
            .start
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            self.start = Some(now);
            self.count = 0;
        }
        if self.count >= self.per_window {
            self.suppressed += 1;
            return (false, 0);
        }
        self.count += 1;
        (true, std::mem::take(&mut self.suppressed))
    }

    /// The lines held back and not yet reported (now reported).
    pub(super) fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Guest text as it may appear in one log line: at most [`MAX_LOGGED`] characters, control
/// characters and quotes escaped (no line of the guest's own in shim.log), its size said when
/// cut.
pub(crate) fn excerpt(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_LOGGED)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(MAX_LOGGED).is_some() {
        out.push_str(&format!("... ({} bytes)", s.len()));
    }
    out
}

/// `s` cut to at most `max` bytes (on a character boundary).
pub(super) fn cap_text(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// An exit code a process can have (`agent_proto::EXIT_CODES`); anything else becomes 255.
pub(super) fn exit_code(code: i32) -> i32 {
    if agent_proto::EXIT_CODES.contains(&code) {
        code
    } else {
        255
    }
}

/// A `top` answer cut to [`TOP_MAX_COLUMNS`] columns, [`TOP_MAX_ROWS`] rows, cells of
/// [`TOP_MAX_CELL`] bytes and [`TOP_MAX_BYTES`] in all.
pub(super) fn cap_top(
    mut titles: Vec<String>,
    processes: Vec<Vec<String>>,
) -> (Vec<String>, Vec<Vec<String>>) {
    titles.truncate(TOP_MAX_COLUMNS);
    let mut total = 0;
    titles = titles
        .into_iter()
        .map(|t| {
            let t = cap_text(t, TOP_MAX_CELL);
            total += t.len();
            t
        })
        .collect();
    let mut rows = Vec::new();
    for row in processes.into_iter().take(TOP_MAX_ROWS) {
        let row: Vec<String> = row
            .into_iter()
            .take(TOP_MAX_COLUMNS)
            .map(|c| cap_text(c, TOP_MAX_CELL))
            .collect();
        let size: usize = row.iter().map(|c| c.len() + 3).sum();
        if total + size > TOP_MAX_BYTES {
            break;
        }
        total += size;
        rows.push(row);
    }
    (titles, rows)
}

impl Shim {
    /// Say in shim.log that the guest did something it may not, within the rate limit.
    pub(super) fn guest_misbehaves(&self, what: fmt::Arguments) {
        let (ok, held_back) = self.guest_log.lock().unwrap().check(Instant::now());
        if held_back > 0 {
            slog!("guest: {held_back} more lines like these were not logged");
        }
        if ok {
            slog!("guest: {what}");
        }
    }

    /// Say how many lines about the guest the rate limit held back (when the connection ends).
    fn guest_log_summary(&self) {
        let held_back = self.guest_log.lock().unwrap().take_suppressed();
        if held_back > 0 {
            slog!("guest: {held_back} more lines like these were not logged");
        }
    }
}

/// Write frames to the agent: control first, then window updates (coalesced) and stdin in
/// turn, so that neither a flood of output nor one of input holds the other up.
pub(super) async fn writer(
    shim: Arc<Shim>,
    mut wr: OwnedWriteHalf,
    mut ctl: mpsc::Receiver<Frame>,
    mut data: mpsc::Receiver<Frame>,
) {
    let credit = |shim: &Shim| -> Vec<Frame> {
        let pending = std::mem::take(&mut shim.inner.lock().unwrap().pending_credit);
        pending
            .into_iter()
            .map(|(stream, n)| Frame::window_update(stream, n))
            .collect()
    };
    let mut credit_first = true;
    loop {
        let frames = tokio::select! {
            biased;
            f = ctl.recv() => match f {
                Some(f) => vec![f],
                None => return,
            },
            _ = shim.credit.notified(), if credit_first => {
                credit_first = false;
                credit(&shim)
            }
            Some(f) = data.recv() => {
                credit_first = true;
                vec![f]
            }
            _ = shim.credit.notified(), if !credit_first => credit(&shim),
        };
        for f in &frames {
            if let Err(e) = agent_proto::write_frame(&mut wr, f).await {
                slog!("writing to agent: {e}");
                return;
            }
        }
    }
}

/// Read the agent until the connection closes or the guest breaks the protocol; then every
/// exec ends (137) and whatever waits for the guest is told it will not answer. The main
/// process's state is left as it is: a VM that stops making sense is still the container's
/// until hyperd stops it.
pub(super) async fn reader(shim: Arc<Shim>, mut rd: OwnedReadHalf) {
    let why = loop {
        let f = match agent_proto::read_frame_or_skip(&mut rd).await {
            Ok(Incoming::Frame(f)) => f,
            Ok(Incoming::Skipped { kind, stream, len }) => {
                guest_log!(
                    shim,
                    "dropped a frame of unknown kind {kind} (stream {stream}, {len} bytes)"
                );
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                break format!("protocol violation: {e}; no longer reading from the guest")
            }
            Err(e) => break format!("agent connection closed: {e}"),
        };
        let r = match f.kind {
            Kind::Stdout | Kind::Stderr => on_output(&shim, f),
            Kind::Control => {
                on_control_frame(&shim, &f.payload);
                Ok(())
            }
            // Stdin credit: the shim bounds what it queues for the guest on its own.
            Kind::WindowUpdate => Ok(()),
            Kind::Stdin | Kind::StdinEof => {
                guest_log!(shim, "dropped a host-bound {:?} frame", f.kind);
                Ok(())
            }
        };
        if let Err(v) = r {
            break format!("protocol violation: {v}; no longer reading from the guest");
        }
    };
    slog!("{why}");
    shim.guest_log_summary();
    let execs: Vec<ExecStream> = {
        let mut inner = shim.inner.lock().unwrap();
        inner.agent_gone = true;
        inner.starting.clear();
        inner.replies.clear();
        inner.exec_ids.clear();
        inner.execs.drain().map(|(_, e)| e).collect()
    };
    // Running execs end with the connection.
    for e in execs {
        let _ = e.tx.send(ExecEvent::Exited(137));
    }
}

/// Where a frame of output goes.
enum Route {
    Main,
    Exec(mpsc::UnboundedSender<ExecEvent>),
    Drop(&'static str),
}

/// Output of a stream. Err: more than the guest's credit (a protocol violation).
fn on_output(shim: &Arc<Shim>, f: Frame) -> Result<(), String> {
    let n = f.payload.len();
    let (code, ls) = if f.kind == Kind::Stdout {
        (1u8, Stream::Stdout)
    } else {
        (2u8, Stream::Stderr)
    };
    let route = {
        let mut inner = shim.inner.lock().unwrap();
        if f.stream == MAIN_STREAM {
            if inner.main != MainStream::Running || inner.finishing {
                Route::Drop("the main process is not running")
            } else if !inner.main_window.take(n) {
                return Err(format!(
                    "{n} bytes of output on stream 0 beyond the {} bytes of credit granted",
                    inner.main_window.avail
                ));
            } else {
                Route::Main
            }
        } else {
            match inner.execs.get_mut(&f.stream) {
                Some(e) if e.running => {
                    if !e.window.take(n) {
                        return Err(format!(
                            "{n} bytes of output on stream {} beyond the {} bytes of credit granted",
                            f.stream, e.window.avail
                        ));
                    }
                    Route::Exec(e.tx.clone())
                }
                _ => Route::Drop("no such stream is running"),
            }
        }
    };
    match route {
        Route::Main => {
            if let Err(e) = shim.log.lock().unwrap().write(ls, &f.payload) {
                slog!("ctr.log: {e}");
            }
            if n <= OUT_CHUNK {
                let _ = shim.out.send(Out::Data(code, Arc::new(f.payload)));
            } else {
                for chunk in f.payload.chunks(OUT_CHUNK) {
                    let _ = shim.out.send(Out::Data(code, Arc::new(chunk.to_vec())));
                }
            }
            shim.grant(MAIN_STREAM, n as u32);
        }
        Route::Exec(tx) => {
            let _ = tx.send(ExecEvent::Data(code, f.payload));
        }
        Route::Drop(why) => guest_log!(
            shim,
            "dropped {n} bytes of output for stream {}: {why}",
            f.stream
        ),
    }
    Ok(())
}

/// Whether `f` is a control frame of type `ready` (without parsing the rest).
pub(super) fn is_ready(f: &Frame) -> bool {
    f.kind == Kind::Control
        && serde_json::from_slice::<Peek>(&f.payload).is_ok_and(|p| p.kind == "ready")
}

/// Just enough of a control message to decide whether to parse the rest.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    req_id: Option<u64>,
}

fn on_control_frame(shim: &Arc<Shim>, payload: &[u8]) {
    let bad = |e: serde_json::Error| {
        guest_log!(
            shim,
            "dropped a bad control frame ({} bytes): {}",
            payload.len(),
            excerpt(&e.to_string())
        )
    };
    let peek: Peek = match serde_json::from_slice(payload) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    if peek.kind == "top_reply" {
        let asked = peek.req_id.is_some_and(|id| {
            matches!(
                shim.inner.lock().unwrap().replies.get(&id),
                Some((Expect::Top, _))
            )
        });
        if !asked {
            guest_log!(
                shim,
                "dropped a top_reply ({} bytes) no top request asked for",
                payload.len()
            );
            return;
        }
    }
    match serde_json::from_slice::<GuestMsg>(payload) {
        Ok(m) => on_control(shim, m),
        Err(e) => bad(e),
    }
}

fn on_control(shim: &Arc<Shim>, msg: GuestMsg) {
    match msg {
        GuestMsg::Started { stream, .. } | GuestMsg::StartFailed { stream, .. } => {
            let started = matches!(msg, GuestMsg::Started { .. });
            let tx = {
                let mut inner = shim.inner.lock().unwrap();
                let starting = if stream == MAIN_STREAM {
                    inner.main == MainStream::Starting
                } else {
                    inner.execs.get(&stream).is_some_and(|e| !e.running)
                };
                let tx = starting.then(|| inner.starting.remove(&stream)).flatten();
                if tx.is_some() {
                    if stream == MAIN_STREAM {
                        inner.main = if started {
                            MainStream::Running
                        } else {
                            MainStream::Done
                        };
                    } else if let Some(e) = inner.execs.get_mut(&stream) {
                        e.running = started;
                    }
                }
                tx
            };
            let Some(tx) = tx else {
                let what = if started { "Started" } else { "StartFailed" };
                guest_log!(
                    shim,
                    "dropped {what} for stream {stream}, which is not starting"
                );
                return;
            };
            if started && stream == MAIN_STREAM {
                // The shim's clock, not the guest's, starts the bill.
                shim.update(|s| {
                    s.status = Status::Running;
                    s.started_at = Some(now());
                });
                shim.started.send_replace(true);
            }
            let msg = match msg {
                GuestMsg::StartFailed {
                    stream,
                    error,
                    exit_code: code,
                } => GuestMsg::StartFailed {
                    stream,
                    error: cap_text(error, MAX_ERROR_TEXT),
                    exit_code: exit_code(code),
                },
                m => m,
            };
            let _ = tx.send(msg);
        }
        GuestMsg::Exited {
            stream,
            exit_code: code,
            oom_killed,
        } => {
            let clamped = exit_code(code);
            if clamped != code {
                guest_log!(shim, "exit code {code} of stream {stream} recorded as 255");
            }
            if stream == MAIN_STREAM {
                let running = {
                    let inner = shim.inner.lock().unwrap();
                    inner.main == MainStream::Running && !inner.finishing
                };
                if running {
                    shim.finish(clamped, oom_killed, String::new());
                } else {
                    guest_log!(shim, "dropped Exited for stream 0, which is not running");
                }
                return;
            }
            let tx = {
                let mut inner = shim.inner.lock().unwrap();
                if inner.execs.get(&stream).is_some_and(|e| e.running) {
                    inner.exec_ids.retain(|_, s| *s != stream);
                    inner.execs.remove(&stream).map(|e| e.tx)
                } else {
                    None
                }
            };
            match tx {
                Some(tx) => {
                    let _ = tx.send(ExecEvent::Exited(clamped));
                }
                None => guest_log!(
                    shim,
                    "dropped Exited for stream {stream}, which is not running"
                ),
            }
        }
        GuestMsg::TopReply { req_id, .. }
        | GuestMsg::StatsReply { req_id, .. }
        | GuestMsg::Done { req_id }
        | GuestMsg::Error { req_id, .. } => {
            let tx = {
                let mut inner = shim.inner.lock().unwrap();
                match inner.replies.get(&req_id) {
                    Some((expect, _)) if expect.accepts(&msg) => {
                        inner.replies.remove(&req_id).map(|(_, tx)| tx)
                    }
                    _ => None,
                }
            };
            let Some(tx) = tx else {
                let what = match &msg {
                    GuestMsg::TopReply { .. } => "top_reply",
                    GuestMsg::StatsReply { .. } => "stats_reply",
                    GuestMsg::Done { .. } => "done",
                    _ => "error",
                };
                guest_log!(
                    shim,
                    "dropped {what} for request {req_id}, which is not waiting for one"
                );
                return;
            };
            let msg = match msg {
                GuestMsg::TopReply {
                    req_id,
                    titles,
                    processes,
                } => {
                    let (titles, processes) = cap_top(titles, processes);
                    GuestMsg::TopReply {
                        req_id,
                        titles,
                        processes,
                    }
                }
                GuestMsg::Error { req_id, message } => GuestMsg::Error {
                    req_id,
                    message: cap_text(message, MAX_ERROR_TEXT),
                },
                m => m,
            };
            let _ = tx.send(msg);
        }
        // The second `Ready` answers bring-up's `Hello`; `Rehearsed` and `Prepared` belong to a
        // standby's rehearsal and preparation. None changes anything here.
        GuestMsg::Ready { .. } | GuestMsg::Rehearsed { .. } | GuestMsg::Prepared { .. } => {}
        GuestMsg::Synced => {
            if shim.inner.lock().unwrap().shutdown_sent {
                shim.synced.send_replace(true);
            } else {
                guest_log!(shim, "dropped Synced before any Shutdown");
            }
        }
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        let mut w = Window::default();
        assert!(w.take(INITIAL_WINDOW as usize));
        assert!(!w.take(1), "nothing left");
        w.grant(10);
        assert!(!w.take(11));
        assert!(w.take(10));
        w.grant(u32::MAX);
        assert_eq!(w.avail, INITIAL_WINDOW, "a grant never exceeds a window");
        assert!(!w.take(usize::MAX));
        assert!(!w.take(INITIAL_WINDOW as usize + 1));
        assert!(w.take(0));
    }

    #[test]
    fn exit_codes() {
        let cases = [
            (0, 0),
            (1, 1),
            (137, 137),
            (255, 255),
            (256, 255),
            (-1, 255),
            (i32::MIN, 255),
            (i32::MAX, 255),
        ];
        for (i, (code, want)) in cases.into_iter().enumerate() {
            assert_eq!(exit_code(code), want, "test[{i}]");
        }
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        let forged = "x\n2099-01-01T00:00:00Z main process exited: code 0\n".repeat(1000);
        let e = excerpt(&forged);
        assert!(!e.contains('\n'), "{e}");
        assert!(e.len() < 2 * MAX_LOGGED + 40, "{}", e.len());
        assert!(e.ends_with(&format!("({} bytes)", forged.len())), "{e}");
        assert_eq!(excerpt("6.1.0-cloud"), "6.1.0-cloud");
        assert_eq!(excerpt("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        // Multi-byte characters are never split.
        assert_eq!(cap_text("ééé".into(), 3), "é");
        assert_eq!(cap_text("abc".into(), 10), "abc");
    }

    #[test]
    fn rate_limit() {
        let mut r = RateLimit::per_minute(3);
        let t0 = Instant::now();
        let got: Vec<(bool, u64)> = (0..5).map(|_| r.check(t0)).collect();
        assert_eq!(
            got,
            [(true, 0), (true, 0), (true, 0), (false, 0), (false, 0)]
        );
        // A minute later: let through, and the two held back are reported.
        assert_eq!(r.check(t0 + Duration::from_secs(61)), (true, 2));
        assert_eq!(r.check(t0 + Duration::from_secs(62)), (true, 0));
        assert_eq!(r.check(t0 + Duration::from_secs(62)), (true, 0));
        assert_eq!(r.check(t0 + Duration::from_secs(62)), (false, 0));
        // What is held back when the connection ends is said then.
        assert_eq!(r.take_suppressed(), 1);
        assert_eq!(r.take_suppressed(), 0);
    }

    #[test]
    fn replies_match_their_request() {
        let top = GuestMsg::TopReply {
            req_id: 1,
            titles: vec![],
            processes: vec![],
        };
        let err = GuestMsg::Error {
            req_id: 1,
            message: String::new(),
        };
        let done = GuestMsg::Done { req_id: 1 };
        assert!(Expect::Top.accepts(&top) && Expect::Top.accepts(&err));
        assert!(!Expect::Top.accepts(&done) && !Expect::Stats.accepts(&top));
        assert!(Expect::Done.accepts(&done) && !Expect::Done.accepts(&top));
    }

    #[test]
    fn top_is_capped() {
        // Wide rows of big cells: columns, cells and the total are cut.
        let titles: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let processes = vec![vec!["c".repeat(2 * TOP_MAX_CELL); 2 * TOP_MAX_COLUMNS]; 100];
        let (t, p) = cap_top(titles, processes);
        assert_eq!(t.len(), TOP_MAX_COLUMNS);
        assert!(!p.is_empty() && p.len() < 100);
        assert!(p.iter().all(|r| r.len() == TOP_MAX_COLUMNS));
        assert!(p.iter().flatten().all(|c| c.len() == TOP_MAX_CELL));
        let size = serde_json::to_vec(&(t, p)).unwrap().len();
        assert!(size <= TOP_MAX_BYTES + 64 * 1024, "{size}");
        // Many small rows: the row count is cut.
        let (_, p) = cap_top(vec![], vec![vec!["1".to_string()]; 2 * TOP_MAX_ROWS]);
        assert_eq!(p.len(), TOP_MAX_ROWS);
        // Small answers pass unchanged.
        let (t, p) = cap_top(vec!["PID".into()], vec![vec!["1".into()]]);
        assert_eq!(
            (t, p),
            (vec!["PID".to_string()], vec![vec!["1".to_string()]])
        );
    }

    #[test]
    fn peek_does_not_build_the_message() {
        // The type and req_id are read; the rest is skipped without being stored.
        let mut json = br#"{"type":"top_reply","req_id":7,"processes":["#.to_vec();
        for _ in 0..100_000 {
            json.extend_from_slice(b"[],");
        }
        json.extend_from_slice(b"[]]}");
        let p: Peek = serde_json::from_slice(&json).unwrap();
        assert_eq!((p.kind.as_ref(), p.req_id), ("top_reply", Some(7)));
        let p: Peek = serde_json::from_slice(br#"{"type":"synced"}"#).unwrap();
        assert_eq!((p.kind.as_ref(), p.req_id), ("synced", None));
        assert!(serde_json::from_slice::<Peek>(b"{").is_err());
    }
}
