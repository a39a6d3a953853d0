//! Fuzz targets for the frame decoder, on both ends of the agent connection.
//!
//! The shim reads the guest with [`read_frame_or_skip`] (the guest is hostile); the agent
//! buffers what the port gives it and cuts frames with [`Frame::decode`] (its `port::read_loop`).
//! Byte streams are built from valid frames, headers that lie about their length, unknown kinds
//! and garbage, then cut at random points, so that most cases get past the header check.
//!
//! Why proptest rather than `cargo fuzz`: nightly toolchains cannot be installed here, and
//! proptest runs on stable inside `cargo test` (small case count, CI), shrinks what it finds
//! and keeps it in `proptest-regressions/`; `scripts/fuzz` runs the same targets long with
//! `PROPTEST_CASES`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;

use agent_proto::{
    decode_raw_header, read_frame, read_frame_or_skip, Frame, GuestMsg, HostMsg, Incoming, Kind,
    HEADER_LEN, MAX_PAYLOAD,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Counts the largest single allocation made on the current thread, so that a target can check
/// what the decoder allocates for a header before the bytes behind it arrived.
struct Largest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

fn largest_since_reset<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

// SAFETY: every call is passed on unchanged to the system allocator; `note` only touches a
// const-initialised thread-local `Cell`, which allocates nothing.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` and `layout` come from this allocator, which is the system's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

fn header(kind: u8, stream: u32, len: u32) -> Vec<u8> {
    let mut h = vec![kind];
    h.extend_from_slice(&stream.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// One piece of a byte stream a peer might send.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![0u8..=5, any::<u8>()];
    let payload = prop::collection::vec(any::<u8>(), 0..512);
    prop_oneof![
        // A well-formed frame of any kind byte.
        (kind.clone(), any::<u32>(), payload.clone()).prop_map(|(k, s, p)| {
            let mut v = header(k, s, p.len() as u32);
            v.extend_from_slice(&p);
            v
        }),
        // A header whose length says more (or less) than what follows.
        (kind, any::<u32>(), any::<u32>(), payload).prop_map(|(k, s, len, p)| {
            let mut v = header(k, s, len);
            v.extend_from_slice(&p);
            v
        }),
        // Lengths around the limit.
        (0u8..=5, (MAX_PAYLOAD as u32 - 2)..=(MAX_PAYLOAD as u32 + 2))
            .prop_map(|(k, len)| header(k, 0, len)),
        // Garbage.
        prop::collection::vec(any::<u8>(), 0..32),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..8).prop_map(|p| p.concat())
}

/// What a reader made of a byte stream: the frames, then how it ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The bytes ran out (possibly in the middle of a frame).
    Eof,
    /// A header the reader refused.
    Invalid,
}

/// The frames the agent's read loop cuts from `bytes` arriving in chunks of `chunks` sizes
/// (the same buffering as `agent::port::read_loop`, up to the first bad header), and the
/// largest its buffer ever was.
fn agent_side(bytes: &[u8], chunks: &[usize]) -> (Vec<Frame>, End, usize) {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut most = 0;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        most = most.max(buf.len());
        loop {
            match Frame::decode(&buf) {
                Ok(Some((f, used))) => {
                    buf.drain(..used);
                    frames.push(f);
                }
                Ok(None) => break,
                Err(_) => return (frames, End::Invalid, most),
            }
        }
    }
    (frames, End::Eof, most)
}

/// A runtime that has run once already (its first `block_on` sets up what it keeps).
fn runtime() -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {});
    rt
}

/// Skipping a frame goes through a fixed buffer: what it allocates does not grow with the
/// length the header claims.
const SKIP_ALLOCATES_AT_MOST: usize = 16 * 1024;

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/fuzz_frames.txt"
        )))),
        ..ProptestConfig::default()
    })]

    /// The shim's reader: every frame it returns is within the limit and is exactly what the
    /// bytes say; it never allocates more than the limit, whatever a header claims; unknown
    /// kinds are skipped, not stored; a length over the limit is `InvalidData`.
    #[test]
    fn fuzz_host_reader(bytes in stream()) {
        let rt = runtime();
        let mut rd: &[u8] = &bytes;
        let mut offset = 0;
        loop {
            let before = rd.len();
            let (got, largest) = largest_since_reset(|| rt.block_on(read_frame_or_skip(&mut rd)));
            prop_assert!(largest <= MAX_PAYLOAD, "allocated {largest} bytes for one frame");
            match got {
                Ok(incoming) => {
                    let used = before - rd.len();
                    let at = &bytes[offset..offset + used];
                    let (kind, stream, len) =
                        decode_raw_header(at[..HEADER_LEN].try_into().unwrap()).unwrap();
                    prop_assert_eq!(used, HEADER_LEN + len);
                    match incoming {
                        Incoming::Frame(f) => {
                            prop_assert_eq!(f.kind as u8, kind);
                            prop_assert_eq!(f.stream, stream);
                            prop_assert_eq!(&f.payload[..], &at[HEADER_LEN..]);
                            prop_assert_eq!(f.encode(), at.to_vec());
                        }
                        Incoming::Skipped { kind: k, stream: s, len: l } => {
                            prop_assert!(Kind::try_from(k).is_err());
                            prop_assert_eq!((k, s, l), (kind, stream, len));
                            prop_assert!(largest <= SKIP_ALLOCATES_AT_MOST, "skipping stored {largest} bytes");
                        }
                    }
                    offset += used;
                }
                Err(e) => {
                    let left = &bytes[offset..];
                    if left.len() >= HEADER_LEN {
                        let claimed = u32::from_be_bytes(left[5..9].try_into().unwrap()) as usize;
                        let want = if claimed > MAX_PAYLOAD {
                            io::ErrorKind::InvalidData
                        } else {
                            io::ErrorKind::UnexpectedEof
                        };
                        prop_assert_eq!(e.kind(), want);
                    } else {
                        prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                    }
                    break;
                }
            }
        }
    }

    /// The agent's buffered decoder: the frames do not depend on how the bytes were cut into
    /// reads, agree with the stream reader's, and the buffer never holds more than one frame
    /// and one read.
    #[test]
    fn fuzz_agent_decoder(
        bytes in stream(),
        chunks in prop::collection::vec(1usize..600, 1..8),
    ) {
        let (frames, end, most) = agent_side(&bytes, &chunks);
        let (whole, whole_end, _) = agent_side(&bytes, &[bytes.len().max(1)]);
        prop_assert_eq!(&frames, &whole);
        prop_assert_eq!(&end, &whole_end);
        prop_assert!(most < HEADER_LEN + MAX_PAYLOAD + 600);

        // The same stream through the async reader (which refuses unknown kinds).
        let rt = runtime();
        let mut rd: &[u8] = &bytes;
        let mut read = Vec::new();
        let reader_end = loop {
            match rt.block_on(read_frame(&mut rd)) {
                Ok(f) => read.push(f),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break End::Eof,
                Err(_) => break End::Invalid,
            }
        };
        prop_assert_eq!(&read, &frames);
        if end == End::Invalid {
            prop_assert_eq!(reader_end, End::Invalid);
        }
        for f in &frames {
            prop_assert!(f.payload.len() <= MAX_PAYLOAD);
            if f.kind == Kind::WindowUpdate {
                prop_assert_eq!(f.window_credit().is_ok(), f.payload.len() == 4);
            }
        }
    }

    /// Any frame the encoder makes decodes to itself.
    #[test]
    fn fuzz_frame_round_trip(kind in 0u8..=5, stream in any::<u32>(), payload in prop::collection::vec(any::<u8>(), 0..2048)) {
        let f = Frame::new(Kind::try_from(kind).unwrap(), stream, payload);
        let bytes = f.encode();
        prop_assert_eq!(Frame::decode(&bytes).unwrap(), Some((f.clone(), bytes.len())));
        prop_assert_eq!(Frame::decode(&bytes[..bytes.len() - 1]).unwrap(), None);
    }

    /// Control payloads in either direction: JSON shaped like the messages, with fields of the
    /// wrong type, missing or extra. Parsing never panics, and what parses serialises back to
    /// the same message.
    #[test]
    fn fuzz_control_messages(payload in control_payload(), as_host in any::<bool>()) {
        let f = Frame::new(Kind::Control, 0, payload);
        if as_host {
            if let Ok(m) = f.host_msg() {
                prop_assert_eq!(Frame::host(&m).host_msg().unwrap(), m);
            }
        } else if let Ok(m) = f.guest_msg() {
            prop_assert_eq!(Frame::guest(&m).guest_msg().unwrap(), m);
        }
    }
}

/// The `type`s of both directions, and every field name they carry.
const TYPES: &[&str] = &[
    "hello",
    "start",
    "exec",
    "signal",
    "resize",
    "top",
    "stats",
    "shutdown",
    "freeze",
    "thaw",
    "rehearse",
    "rehearsed",
    "ready",
    "started",
    "start_failed",
    "exited",
    "top_reply",
    "stats_reply",
    "error",
    "done",
    "synced",
];
const FIELDS: &[&str] = &[
    "version",
    "entropy",
    "process",
    "hostname",
    "root_device",
    "realtime_ns",
    "machine_id",
    "network",
    "volumes",
    "stream",
    "signal",
    "width",
    "height",
    "req_id",
    "ps_args",
    "targets",
    "millis",
    "error",
    "kernel_release",
    "pid",
    "exit_code",
    "oom_killed",
    "titles",
    "processes",
    "memory_usage",
    "memory_limit",
    "cpu_total_ns",
    "system_cpu_ns",
    "online_cpus",
    "pids",
    "message",
    "args",
    "env",
    "cwd",
    "user",
    "tty",
    "open_stdin",
    "tty_width",
    "tty_height",
    "slot",
    "target",
    "read_only",
    "copy_up",
    "size_bytes",
    "mac",
    "ip",
    "gateway",
    "mtu",
];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (0u32..70000).prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn control_payload() -> impl Strategy<Value = Vec<u8>> {
    let object = (
        prop::sample::select(TYPES),
        prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..10),
    )
        .prop_map(|(t, fields)| {
            let mut m = serde_json::Map::new();
            m.insert("type".into(), t.into());
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            serde_json::to_vec(&m).unwrap()
        });
    prop_oneof![
        4 => object,
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Messages built from real values: they must all round-trip.
#[test]
fn known_messages_round_trip() {
    let guest = GuestMsg::Exited {
        stream: 3,
        exit_code: 137,
        oom_killed: true,
    };
    assert_eq!(Frame::guest(&guest).guest_msg().unwrap(), guest);
    let host = HostMsg::Freeze {
        req_id: 9,
        targets: vec!["/data".into()],
    };
    assert_eq!(Frame::host(&host).host_msg().unwrap(), host);
}
