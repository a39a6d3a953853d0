//! A service's listening socket and its accept loop, which hands each connection to the
//! proxy of the service's current protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::config::Protocol;
use crate::service::Service;
use crate::{peer_liveness, proxy_http, proxy_tcp};

/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors, say) instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub struct Listener {
    pub address: SocketAddr,
    accepting: JoinHandle<()>,
}

impl Listener {
    pub async fn bind(address: SocketAddr, service: Arc<Service>) -> std::io::Result<Self> {
        let socket = TcpListener::bind(address).await?;
        Ok(Self {
            address,
            accepting: tokio::spawn(accept_loop(socket, service)),
        })
    }

    /// Stops accepting and closes the socket (the address can be bound again on return);
    /// accepted connections carry on.
    pub async fn close(self) {
        self.accepting.abort();
        let _ = self.accepting.await;
    }
}

async fn accept_loop(socket: TcpListener, service: Arc<Service>) {
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                if let Err(err) = peer_liveness::watch(&stream) {
                    tracing::warn!(service = %service.name, %peer, %err, "keepalive not set");
                }
                tokio::spawn(serve(stream, peer, service.clone()));
            }
            Err(err) => {
                tracing::warn!(service = %service.name, %err, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, service: Arc<Service>) {
    let settings = service.settings();
    match (settings.protocol, &settings.tls) {
        (Protocol::Tcp | Protocol::Https, _) => proxy_tcp::serve(stream, peer, service).await,
        (Protocol::Http, _) => proxy_http::serve(stream, peer, service, "http").await,
        (Protocol::HttpsTerm, Some(acceptor)) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => proxy_http::serve(tls, peer, service, "https").await,
                Ok(Err(err)) => {
                    tracing::debug!(service = %service.name, %peer, "TLS handshake: {err}")
                }
                Err(_) => {
                    tracing::debug!(service = %service.name, %peer, "TLS handshake timed out")
                }
            }
        }
        (Protocol::HttpsTerm, None) => {
            unreachable!("an httpsTerm service always has a certificate")
        }
    }
}
