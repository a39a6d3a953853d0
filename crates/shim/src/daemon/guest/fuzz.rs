//! Fuzz target for the shim's side of the agent protocol: what it does with a control frame
//! and the values in it before it trusts any (proptest on stable, see `scripts/fuzz`). The
//! frame decoder itself is fuzzed in `agent-proto/tests/fuzz_frames.rs`.

use proptest::prelude::*;

use super::*;

/// Control payloads as a hostile guest could write them: every message type, fields of any
/// JSON type, duplicated or escaped `type` keys, and raw bytes.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let types = prop::sample::select(vec![
        "ready",
        "started",
        "start_failed",
        "exited",
        "top_reply",
        "stats_reply",
        "error",
        "done",
        "synced",
        "rehearsed",
        "top\\u005freply",
        "READY",
        "",
    ]);
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "\"[a-z ]{0,6}\"",
        Just("[]".to_string()),
        Just("[[\"a\",\"b\"],[\"c\"]]".to_string()),
        Just("[\"PID\",\"CMD\"]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        Just("1.5".to_string()),
    ];
    let field = prop::sample::select(vec![
        "type",
        "stream",
        "pid",
        "exit_code",
        "oom_killed",
        "error",
        "req_id",
        "titles",
        "processes",
        "message",
        "version",
        "kernel_release",
        "millis",
        "memory_usage",
    ]);
    let object = (
        types.clone(),
        prop::collection::vec((field, value), 0..8),
        prop::option::of(types),
    )
        .prop_map(|(t, fields, second_type)| {
            let mut parts = vec![format!("\"type\":\"{t}\"")];
            parts.extend(fields.iter().map(|(k, v)| format!("\"{k}\":{v}")));
            if let Some(t2) = second_type {
                parts.push(format!("\"type\":\"{t2}\""));
            }
            format!("{{{}}}", parts.join(",")).into_bytes()
        });
    prop_oneof![
        6 => object,
        1 => prop::collection::vec(any::<u8>(), 0..48),
    ]
}

/// A `top` cell: short text, or long enough to be cut.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,4}",
        (0usize..1100).prop_map(|n| "x".repeat(n)),
        (0usize..600).prop_map(|n| "é".repeat(n)),
    ]
}

/// The `type` a message serialises with.
fn tag(m: &GuestMsg) -> String {
    serde_json::to_value(m).unwrap()["type"]
        .as_str()
        .unwrap()
        .to_string()
}

proptest! {
    /// The peek that gates parsing sees the type the full parse acts on, so a `top_reply`
    /// nobody asked for cannot get past it dressed as another type (duplicate or escaped
    /// `type` keys); `is_ready` agrees with the full parse; nothing panics.
    #[test]
    fn fuzz_control_peek(payload in payload()) {
        let frame = Frame::new(Kind::Control, 0, payload.clone());
        let ready = is_ready(&frame);
        let peek = serde_json::from_slice::<Peek>(&payload);
        prop_assert_eq!(ready, peek.as_ref().is_ok_and(|p| p.kind == "ready"));
        // A payload the peek refuses is dropped whole (e.g. a `req_id` of the wrong type on a
        // message that has none), so only what it accepts must agree with the full parse.
        if let (Ok(m), Ok(peek)) = (serde_json::from_slice::<GuestMsg>(&payload), &peek) {
            let tag = tag(&m);
            prop_assert_eq!(peek.kind.as_ref(), tag.as_str());
            if let GuestMsg::TopReply { req_id, .. } = m {
                prop_assert_eq!(peek.req_id, Some(req_id));
            }
            prop_assert_eq!(ready, matches!(m, GuestMsg::Ready { .. }));
        }
    }

    /// Guest text is cut to its bounds on a character boundary, and logged on one line.
    #[test]
    fn fuzz_guest_text(s in "\\PC{0,300}|[\\x00-\\x1f\"\\\\]{0,200}|.{0,400}", max in 0usize..300) {
        let cut = cap_text(s.clone(), max);
        prop_assert!(cut.len() <= max);
        prop_assert!(s.starts_with(&cut));
        if s.len() <= max {
            prop_assert_eq!(&cut, &s);
        }
        let line = excerpt(&s);
        prop_assert!(!line.chars().any(char::is_control), "{line:?}");
        prop_assert!(line.chars().count() <= MAX_LOGGED * 10 + 32);
    }

    /// A `top` answer of any shape is cut to its bounds, keeping what it keeps in order.
    #[test]
    fn fuzz_top_caps(
        titles in prop::collection::vec(".{0,8}", 0..80),
        rows in prop::collection::vec(prop::collection::vec(cell(), 0..70), 0..12),
        extra in 0u8..3,
    ) {
        // Answers big enough to reach the byte bound, or the row bound.
        let mut rows = rows;
        match extra {
            1 => rows.extend(std::iter::repeat_n(vec!["x".repeat(1100); 64], 20)),
            2 => rows.extend(std::iter::repeat_n(vec![String::new()], TOP_MAX_ROWS + 10)),
            _ => {}
        }
        let (t, r) = cap_top(titles.clone(), rows.clone());
        prop_assert!(t.len() <= TOP_MAX_COLUMNS && t.len() == titles.len().min(TOP_MAX_COLUMNS));
        prop_assert!(r.len() <= TOP_MAX_ROWS && r.len() <= rows.len());
        let total: usize = t.iter().map(String::len).sum::<usize>()
            + r.iter().flatten().map(|c| c.len() + 3).sum::<usize>();
        prop_assert!(total <= TOP_MAX_BYTES, "{total} bytes kept");
        for (kept, given) in r.iter().zip(&rows) {
            prop_assert!(kept.len() <= TOP_MAX_COLUMNS);
            for (k, g) in kept.iter().zip(given) {
                prop_assert!(k.len() <= TOP_MAX_CELL && g.starts_with(k.as_str()));
            }
        }
    }

    /// Exit codes are always ones a process can have; output credit never goes below zero or
    /// above a window, and output is taken only within it.
    #[test]
    fn fuzz_values(code in any::<i32>(), ops in prop::collection::vec((any::<bool>(), any::<u32>(), any::<usize>()), 0..40)) {
        prop_assert!(agent_proto::EXIT_CODES.contains(&exit_code(code)));
        let mut w = Window::default();
        for (take, grant, n) in ops {
            let n = n % (2 * INITIAL_WINDOW as usize);
            let before = w.avail;
            if take {
                let ok = w.take(n);
                prop_assert_eq!(ok, n <= before as usize);
                prop_assert_eq!(w.avail, if ok { before - n as u32 } else { before });
            } else {
                w.grant(grant);
                prop_assert!(w.avail >= before && w.avail <= INITIAL_WINDOW);
            }
        }
    }
}
