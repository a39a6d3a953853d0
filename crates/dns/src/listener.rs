//! One listen address: a UDP socket and a TCP listener on it, answering from the network they
//! are given, which a reload swaps without touching the sockets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::handler::{respond, Transport};
use crate::network::Network;

/// Bounds on work in flight per address, so a flood cannot exhaust memory or descriptors.
const MAX_UDP_QUERIES_IN_FLIGHT: usize = 1024;
const MAX_TCP_CONNECTIONS: usize = 128;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DATAGRAM: usize = 65_535;

pub struct Listener {
    network: watch::Sender<Arc<Network>>,
    /// Dropping the listener aborts these, which drops the sockets and every query in flight.
    _serving: JoinSet<()>,
}

impl Listener {
    /// Binds both protocols or neither.
    pub async fn bind(address: SocketAddr, network: Network) -> std::io::Result<Self> {
        let udp = UdpSocket::bind(address).await?;
        let tcp = TcpListener::bind(address).await?;
        let (sender, receiver) = watch::channel(Arc::new(network));
        let mut serving = JoinSet::new();
        serving.spawn(serve_udp(Arc::new(udp), receiver.clone()));
        serving.spawn(serve_tcp(tcp, receiver));
        Ok(Self {
            network: sender,
            _serving: serving,
        })
    }

    /// Later queries see `network`; those in flight finish with the one they started with.
    pub fn update(&self, network: Network) {
        self.network.send_replace(Arc::new(network));
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, network: watch::Receiver<Arc<Network>>) {
    let mut in_flight = JoinSet::new();
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                tracing::warn!(%err, "udp receive failed");
                continue;
            }
        };
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= MAX_UDP_QUERIES_IN_FLIGHT {
            continue;
        }
        let request = buf[..len].to_vec();
        let network = network.borrow().clone();
        let socket = socket.clone();
        in_flight.spawn(async move {
            if let Some(reply) = respond(&request, &network, client.ip(), Transport::Udp).await {
                if let Err(err) = socket.send_to(&reply, client).await {
                    tracing::debug!(%client, %err, "udp send failed");
                }
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, network: watch::Receiver<Arc<Network>>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Typically out of descriptors: give connections a moment to close.
                tracing::warn!(%err, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() < MAX_TCP_CONNECTIONS {
            connections.spawn(serve_connection(stream, client.ip(), network.clone()));
        }
    }
}

/// RFC 7766: length-prefixed messages, several per connection, answered in order.
async fn serve_connection(
    mut stream: TcpStream,
    client: IpAddr,
    network: watch::Receiver<Arc<Network>>,
) {
    while let Ok(Ok(request)) = timeout(TCP_IDLE_TIMEOUT, read_frame(&mut stream)).await {
        let current = network.borrow().clone();
        if let Some(reply) = respond(&request, &current, client, Transport::Tcp).await {
            if write_frame(&mut stream, &reply).await.is_err() {
                return;
            }
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_frame(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("message too long for tcp framing"))?;
    let mut frame = Vec::with_capacity(2 + message.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    stream.write_all(&frame).await
}
