//! Fuzz target for the packet parser and what answers it: any datagram a container sends to
//! its network's DNS server (proptest on stable, see `scripts/fuzz`).
//!
//! Packets are built structure-aware (a header with random flags and counts, questions of
//! random labels, compression pointers to anywhere including themselves, random types and
//! classes, an EDNS record with any payload size), then some of their bytes overwritten, so
//! that most cases reach the parser's deeper paths rather than failing at the header.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType};
use proptest::prelude::*;

use crate::answer::udp_limit;
use crate::handler::{respond, Transport};
use crate::network::Network;
use crate::records::Records;

/// The client every fuzzed query comes from: it has names of its own.
const CLIENT: &str = "172.16.0.2";

fn network() -> Network {
    let mut configured = BTreeMap::new();
    configured.insert("web".to_string(), vec!["172.16.0.2".parse().unwrap()]);
    configured.insert(
        "db".to_string(),
        (2..200)
            .map(|i| format!("172.16.1.{i}").parse().unwrap())
            .collect(),
    );
    configured.insert("v6".to_string(), vec!["fd00::2".parse().unwrap()]);
    let upstream: Arc<[SocketAddr]> = Arc::new([]);
    let mut linked = BTreeMap::new();
    linked.insert("alias".to_string(), vec!["172.16.0.3".parse().unwrap()]);
    Network {
        records: Records::new(&configured),
        client_records: [(CLIENT.parse().unwrap(), Records::new(&linked))].into(),
        upstream,
    }
}

/// A name in wire form: labels (known names, random bytes, over-long lengths, bad label types)
/// ended by the root or by a compression pointer anywhere.
fn name() -> impl Strategy<Value = Vec<u8>> {
    let label = prop_oneof![
        prop::sample::select(vec![
            b"web".to_vec(),
            b"db".to_vec(),
            b"v6".to_vec(),
            b"in-addr".to_vec(),
            b"arpa".to_vec(),
            b"2".to_vec(),
            b"16".to_vec(),
            b"172".to_vec(),
        ])
        .prop_map(|l| [vec![l.len() as u8], l].concat()),
        prop::collection::vec(any::<u8>(), 0..70).prop_map(|l| [vec![l.len() as u8], l].concat()),
        // A length byte with the label-type bits set (0x40, 0x80: reserved; 0xC0: pointer).
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(t, l)| [vec![t], l].concat()),
    ];
    let end = prop_oneof![
        3 => Just(vec![0u8]),
        1 => any::<u16>().prop_map(|off| (0xC000 | (off & 0x3FFF)).to_be_bytes().to_vec()),
        1 => (0u16..64).prop_map(|off| (0xC000 | off).to_be_bytes().to_vec()),
        1 => Just(vec![]),
    ];
    (prop::collection::vec(label, 0..6), end)
        .prop_map(|(labels, end)| [labels.concat(), end].concat())
}

fn record_type() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![1u16, 28, 12, 2, 6, 16, 41, 43, 48, 255, 252]),
        any::<u16>(),
    ]
}

/// A whole packet: header, questions, then possibly an OPT record and trailing bytes, with
/// some bytes overwritten.
fn packet() -> impl Strategy<Value = Vec<u8>> {
    let question = (name(), record_type(), prop_oneof![Just(1u16), any::<u16>()])
        .prop_map(|(n, t, c)| [n, t.to_be_bytes().to_vec(), c.to_be_bytes().to_vec()].concat());
    let opt = (
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(size, ttl, rdata)| {
            let mut v = vec![0u8, 0, 41];
            v.extend_from_slice(&size.to_be_bytes());
            v.extend_from_slice(&ttl.to_be_bytes());
            v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            v.extend_from_slice(&rdata);
            v
        });
    (
        any::<u16>(),
        prop_oneof![3 => Just(0x0100u16), 1 => any::<u16>()],
        prop::collection::vec(question, 0..3),
        prop::option::of(opt),
        prop_oneof![3 => Just(None), 1 => any::<[u16; 4]>().prop_map(Some)],
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    )
        .prop_map(|(id, flags, questions, opt, counts, tail, flips)| {
            let counts = counts.unwrap_or([questions.len() as u16, 0, 0, u16::from(opt.is_some())]);
            let mut v = id.to_be_bytes().to_vec();
            v.extend_from_slice(&flags.to_be_bytes());
            for c in counts {
                v.extend_from_slice(&c.to_be_bytes());
            }
            v.extend(questions.concat());
            v.extend(opt.unwrap_or_default());
            v.extend(tail);
            for (at, byte) in flips {
                let i = at.index(v.len());
                v[i] = byte;
            }
            v
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    /// The server never panics on a packet; a query it can parse always gets an answer, which
    /// is a response to it (same id, QR set), parses itself and fits the client's UDP size;
    /// what it cannot parse, or a response, is dropped.
    #[test]
    fn fuzz_dns_packet(bytes in packet(), tcp in any::<bool>()) {
        let network = network();
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let reply = runtime().block_on(respond(&bytes, &network, CLIENT.parse().unwrap(), transport));
        let request = Message::from_vec(&bytes);
        let Some(reply) = reply else {
            prop_assert!(
                request.as_ref().map_or(true, |r| r.metadata.message_type != MessageType::Query),
                "a parsed query was dropped: {request:?}"
            );
            return Ok(());
        };
        let request = request.expect("answered a packet that does not parse");
        prop_assert_eq!(request.metadata.message_type, MessageType::Query);
        let parsed = Message::from_vec(&reply).expect("the reply parses");
        prop_assert_eq!(parsed.metadata.id, request.metadata.id);
        prop_assert_eq!(parsed.metadata.message_type, MessageType::Response);
        if !tcp {
            prop_assert!(
                reply.len() <= udp_limit(&request),
                "{} bytes over UDP to a client taking {}",
                reply.len(),
                udp_limit(&request)
            );
        }
    }
}
