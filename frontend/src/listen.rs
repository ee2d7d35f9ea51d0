//! The listeners: binding an MQTT socket, and accepting TLS connections (MQTT over TLS, or
//! MQTT over WebSocket over TLS) into a connection task. Above `connection.rs` and
//! `websocket.rs`, which serve what is accepted; `tls.rs` below only loads certificates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::shared::Shared;
use crate::tls::{ClientCertificate, TlsState};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds a listener for MQTT (over TCP or WebSocket). TCP_NODELAY and SO_RCVBUF are set on
/// the listening socket, before `listen`: accepted sockets inherit both (Linux), which saves
/// two system calls per connection, and the window offered in the handshake already fits
/// the bounded buffer.
pub(crate) fn mqtt_listener(addr: SocketAddr, receive_buffer: Option<usize>) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restart may bind while old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(u32::try_from(bytes).unwrap_or(u32::MAX))?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the kernel queues before `accept` (as tokio's `TcpListener::bind`).
const LISTEN_BACKLOG: u32 = 1024;

/// Which protocol a TLS listener carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Carrying {
    /// MQTT directly over TLS (`tls_listen`).
    Mqtt,
    /// MQTT over WebSocket over TLS (`wss_listen`).
    WebSocket,
}

/// Accepts TLS connections on `listener` until the task is dropped. Each handshake runs in
/// the connection's own task, bounded by [`HANDSHAKE_TIMEOUT`], so a slow client holds up
/// no one else.
pub(crate) async fn serve(listener: TcpListener, tls: Arc<TlsState>, carrying: Carrying, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let acceptor = tls.acceptor();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move { handle(acceptor, stream, peer, carrying, shared).await });
            }
            Err(error) => {
                tracing::warn!(%error, "TLS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(acceptor: TlsAcceptor, stream: TcpStream, peer: SocketAddr, carrying: Carrying, shared: Arc<Shared>) {
    let stream: TlsStream<TcpStream> = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            // A plaintext client, an untrusted or missing client certificate, a client that
            // does not trust ours: the client sees the alert, the operator this line.
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // Verified by rustls against tls.client_ca_file when there is one; none otherwise.
    let certificate = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(ClientCertificate::of);
    match carrying {
        Carrying::Mqtt => {
            let span = tracing::info_span!("mqtt.connection", %peer, tls = true);
            let (reader, writer) = tokio::io::split(stream);
            let connection = Box::pin(crate::connection::run_transport(
                Box::new(reader),
                Box::new(writer),
                peer,
                certificate,
                shared,
            ));
            tracing::Instrument::instrument(connection, span).await;
        }
        Carrying::WebSocket => crate::websocket::handle(stream, peer, certificate, shared).await,
    }
}
