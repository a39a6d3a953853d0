//! One query in, one response out: local answers, relayed answers, or an error code (NXDOMAIN
//! for the tenant's own names it does not have, see `answer::is_tenant_name`).

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};

use crate::answer::{is_tenant_name, local_answers, response, udp_limit};
use crate::forward::forward;
use crate::network::Network;

#[derive(Clone, Copy)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The response to send back, or `None` to drop the packet (unparseable, or itself a response).
pub async fn respond(
    request_bytes: &[u8],
    network: &Network,
    client: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(request_bytes).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let reply = if request.metadata.op_code != OpCode::Query {
        response(&request, ResponseCode::NotImp, vec![])
    } else if let Some(query) = request.queries.first() {
        let own = network
            .client_records
            .get(&client)
            .and_then(|records| local_answers(records, query));
        match own.or_else(|| local_answers(&network.records, query)) {
            Some(answers) => response(&request, ResponseCode::NoError, answers),
            None if is_tenant_name(query) => response(&request, ResponseCode::NXDomain, vec![]),
            None => {
                if let Some(relayed) = forward(request_bytes, &network.upstream).await {
                    return Some(relayed);
                }
                // What Docker's embedded DNS does when no upstream works (or none is set).
                response(&request, ResponseCode::ServFail, vec![])
            }
        }
    } else {
        response(&request, ResponseCode::FormErr, vec![])
    };
    encode(&reply, &request, transport)
}

/// Serialised, and cut down to the question with TC set if it does not fit the client's UDP size.
fn encode(reply: &Message, request: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = reply
        .to_vec()
        .map_err(|err| tracing::warn!(%err, "cannot encode a response"))
        .ok()?;
    match transport {
        Transport::Udp if bytes.len() > udp_limit(request) => reply.truncate().to_vec().ok(),
        _ => Some(bytes),
    }
}
