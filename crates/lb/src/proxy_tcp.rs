//! tcp and https (TLS passed through): bytes copied both ways between the client and one
//! backend. A backend that refuses is skipped for the next healthy one before any byte moves.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::service::Service;

pub async fn serve(mut client: TcpStream, peer: SocketAddr, service: Arc<Service>) {
    let mut tried = Vec::new();
    let (backend, mut upstream) = loop {
        // None: no healthy backend (left); dropping the client closes its connection.
        let Some(backend) = service.pick(peer.ip(), &tried) else {
            tracing::info!(service = %service.name, %peer, "no healthy backend; closing");
            return;
        };
        match backend.connect().await {
            Ok(stream) => break (backend, stream),
            Err(err) => {
                tracing::info!(service = %service.name, id = %backend.id, %err, "backend unreachable; trying another");
                tried.push(backend);
            }
        }
    };
    let _active = backend.track();
    let _ = client.set_nodelay(true);
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(service = %service.name, id = %backend.id, %peer, "connection ended: {err}");
    }
}
