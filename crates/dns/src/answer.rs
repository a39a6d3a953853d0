//! Answers built from a network's own records, without any IO.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, Metadata, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{RData, Record, RecordType};

use crate::records::Records;

/// Containers come and go: resolvers should not hold on to an address for long.
pub const TTL_SECONDS: u32 = 10;
/// The EDNS payload size we advertise and honour at most (the DNS flag day 2020 value).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// The records answering `query` if the network knows its name (possibly none, e.g. AAAA for a
/// name with only IPv4 addresses: NOERROR/NODATA so resolvers don't wait on upstream).
/// `None` means the name is not ours and the query goes upstream.
pub fn local_answers(records: &Records, query: &Query) -> Option<Vec<Record>> {
    let name = query.name();
    if let Some(addresses) = records.addresses(name) {
        let wanted = |address: &IpAddr| match (query.query_type(), address) {
            (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(A(*v4))),
            (RecordType::AAAA, IpAddr::V6(v6)) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        };
        return Some(
            addresses
                .iter()
                .filter_map(wanted)
                .map(|data| Record::from_rdata(name.clone(), TTL_SECONDS, data))
                .collect(),
        );
    }
    if query.query_type() == RecordType::PTR {
        let names = records.names_for(name)?;
        return Some(
            names
                .iter()
                .map(|target| {
                    Record::from_rdata(name.clone(), TTL_SECONDS, RData::PTR(PTR(target.clone())))
                })
                .collect(),
        );
    }
    None
}

/// Whether `query` is about a name of the tenant's own, which only this server can know: a name
/// of a single label (`web`, `nosuchname`), where containers', services' and aliases' names
/// live, and what a resolver asks last, bare, after its search domains. One the network does
/// not have gets an authoritative NXDOMAIN at once instead of a trip upstream, where nobody
/// holds it either (no records may sit on a bare top-level domain but its zone's apex), and
/// where an unreachable upstream would keep the client waiting until it gives up. The apex's
/// own types (SOA, NS, and the DNSSEC records a validating resolver asks of a top-level domain)
/// still go upstream, as do all names of more than one label.
pub fn is_tenant_name(query: &Query) -> bool {
    query.name().num_labels() == 1
        && !matches!(
            query.query_type(),
            RecordType::SOA
                | RecordType::NS
                | RecordType::DS
                | RecordType::DNSKEY
                | RecordType::RRSIG
                | RecordType::NSEC
                | RecordType::NSEC3
                | RecordType::NSEC3PARAM
                | RecordType::CDS
                | RecordType::CDNSKEY
        )
}

/// A response to `request` carrying its question, with `answers` and the given code.
pub fn response(request: &Message, code: ResponseCode, answers: Vec<Record>) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.recursion_available = true;
    response.metadata.authoritative =
        matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);
    response.metadata.response_code = code;
    response.add_queries(request.queries.iter().cloned());
    response.add_answers(answers);
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

/// The largest UDP response the client said it takes.
pub fn udp_limit(request: &Message) -> usize {
    usize::from(request.max_payload().min(MAX_UDP_PAYLOAD))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hickory_proto::rr::Name;

    use super::*;

    fn records() -> Records {
        let mut configured = BTreeMap::new();
        configured.insert("web".to_string(), vec!["172.16.0.2".parse().unwrap()]);
        configured.insert("v6".to_string(), vec!["fd00::2".parse().unwrap()]);
        Records::new(&configured)
    }

    fn query(name: &str, kind: RecordType) -> Query {
        Query::query(Name::from_ascii(name).unwrap(), kind)
    }

    #[test]
    fn a_for_a_known_name() {
        let answers = local_answers(&records(), &query("web.", RecordType::A)).unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].data, RData::A(A("172.16.0.2".parse().unwrap())));
        assert_eq!(answers[0].ttl, TTL_SECONDS);
    }

    #[test]
    fn no_data_for_other_types_of_a_known_name() {
        assert_eq!(
            local_answers(&records(), &query("web.", RecordType::AAAA)),
            Some(vec![])
        );
        assert_eq!(
            local_answers(&records(), &query("web.", RecordType::MX)),
            Some(vec![])
        );
        assert_eq!(
            local_answers(&records(), &query("v6.", RecordType::A)),
            Some(vec![])
        );
        assert_eq!(
            local_answers(&records(), &query("v6.", RecordType::AAAA))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn ptr_for_a_record_address() {
        let answers = local_answers(
            &records(),
            &query("2.0.16.172.in-addr.arpa.", RecordType::PTR),
        )
        .unwrap();
        assert_eq!(
            answers[0].data,
            RData::PTR(PTR(Name::from_ascii("web.").unwrap()))
        );
    }

    #[test]
    fn single_labels_are_the_tenants_and_the_rest_goes_upstream() {
        let cases = [
            ("nosuchname.", RecordType::A, true),
            ("NoSuchName", RecordType::AAAA, true),
            ("web.", RecordType::MX, true),
            ("com.", RecordType::NS, false),
            ("com.", RecordType::SOA, false),
            ("com.", RecordType::DS, false),
            ("com.", RecordType::DNSKEY, false),
            (".", RecordType::NS, false),
            ("example.com.", RecordType::A, false),
            ("web.svc.", RecordType::A, false),
            ("9.0.16.172.in-addr.arpa.", RecordType::PTR, false),
        ];
        for (i, (name, kind, ours)) in cases.into_iter().enumerate() {
            assert_eq!(is_tenant_name(&query(name, kind)), ours, "test[{i}] {name}");
        }
    }

    #[test]
    fn unknown_names_and_addresses_are_not_ours() {
        assert_eq!(
            local_answers(&records(), &query("example.com.", RecordType::A)),
            None
        );
        assert_eq!(
            local_answers(
                &records(),
                &query("9.0.16.172.in-addr.arpa.", RecordType::PTR)
            ),
            None
        );
    }
}
