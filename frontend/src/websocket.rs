//! MQTT over WebSocket: the listener for `[mqtt] ws_listen` / `--ws`. It accepts the HTTP
//! upgrade on path `/mqtt` with subprotocol `mqtt` (or the older `mqttv3.1`) and turns the
//! binary frames into a plain byte stream for `connection.rs`, so every protocol rule is the
//! same as over TCP. MQTT packets and WebSocket frames are independent: a packet may span
//! frames and a frame may hold several packets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::shared::Shared;

/// The only path that upgrades.
pub const WEBSOCKET_PATH: &str = "/mqtt";
/// Subprotocols we accept, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// How long the HTTP upgrade may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered between the WebSocket and the connection, each way.
const PIPE_BYTES: usize = 64 << 10;
/// Most bytes read from the connection per outgoing binary frame.
const FRAME_BYTES: usize = 64 << 10;

/// Accepts WebSocket connections on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move { handle(stream, peer, None, shared).await });
            }
            Err(error) => {
                tracing::warn!(%error, "WebSocket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Picks our subprotocol from the client's `Sec-WebSocket-Protocol` list.
fn choose_subprotocol(offered: Option<&HeaderValue>) -> Option<&'static str> {
    let offered = offered?.to_str().ok()?;
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    SUBPROTOCOLS.into_iter().find(|ours| offered.iter().any(|theirs| theirs.eq_ignore_ascii_case(ours)))
}

/// Whether a handshake's `Origin` may connect: any, when `allowed` is empty; otherwise one of
/// `allowed` (compared without regard to ASCII case, as origins are). A request without an
/// `Origin` is not a browser's, and the allowlist is against other sites' pages in a
/// browser, so it passes.
fn origin_allowed(allowed: &[String], origin: Option<&[u8]>) -> bool {
    match origin {
        Some(origin) if !allowed.is_empty() => allowed.iter().any(|ok| ok.as_bytes().eq_ignore_ascii_case(origin)),
        _ => true,
    }
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why.to_owned()));
    *response.status_mut() = status;
    response
}

/// Upgrades one connection (plain TCP, or TLS for `wss_listen`) and runs MQTT over it.
#[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
pub(crate) async fn handle<S>(
    stream: S,
    peer: SocketAddr,
    certificate: Option<crate::tls::ClientCertificate>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let check = |request: &Request, mut response: Response| {
        if request.uri().path() != WEBSOCKET_PATH {
            return Err(refuse(StatusCode::NOT_FOUND, "MQTT over WebSocket is served on /mqtt"));
        }
        let origin = request.headers().get("origin").map(HeaderValue::as_bytes);
        if !origin_allowed(&shared.config.ws_allowed_origins, origin) {
            tracing::debug!(%peer, origin = ?origin.map(String::from_utf8_lossy), "WebSocket origin refused");
            return Err(refuse(StatusCode::FORBIDDEN, "this Origin may not connect (mqtt.ws_allowed_origins)"));
        }
        let Some(chosen) = choose_subprotocol(request.headers().get("sec-websocket-protocol")) else {
            return Err(refuse(StatusCode::BAD_REQUEST, "the WebSocket subprotocol must be mqtt"));
        };
        response.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
        Ok(response)
    };
    // A message may hold several packets; bounded so one client cannot make us buffer much
    // more than a packet's worth.
    let max_message = (shared.config.max_packet_size as usize).saturating_add(PIPE_BYTES).max(1 << 20);
    let config = WebSocketConfig::default().max_message_size(Some(max_message)).max_frame_size(Some(max_message));
    let accepted = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)),
    )
    .await;
    let websocket = match accepted {
        Ok(Ok(websocket)) => websocket,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "WebSocket handshake refused");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "WebSocket handshake timed out");
            return;
        }
    };
    let (pipe, broker_side) = tokio::io::duplex(PIPE_BYTES);
    let (reader, writer) = tokio::io::split(broker_side);
    let connection = Box::pin(crate::connection::run_transport(
        Box::new(reader),
        Box::new(writer),
        peer,
        certificate,
        Arc::clone(&shared),
    ));
    tokio::join!(connection, pump(websocket, pipe));
}

/// Moves bytes between the WebSocket and the connection until either side ends. Dropping
/// the pipe ends the connection's reads (a quiet close) when the WebSocket goes first.
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(websocket: tokio_tungstenite::WebSocketStream<S>, pipe: DuplexStream) {
    let (mut sink, mut frames) = websocket.split();
    let (mut from_connection, mut to_connection) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(message) = frames.next().await {
            match message {
                Ok(Message::Binary(data)) => {
                    if to_connection.write_all(&data).await.is_err() {
                        return;
                    }
                }
                // MQTT travels in binary frames only (MQTT 5, section 6).
                Ok(Message::Text(_)) | Ok(Message::Close(_)) | Err(_) => return,
                // Pings are answered by tungstenite.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            }
        }
    };
    let outbound = async {
        let mut buf = BytesMut::with_capacity(FRAME_BYTES);
        loop {
            buf.reserve(FRAME_BYTES);
            match from_connection.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let frame: Bytes = buf.split().freeze();
                    if sink.send(Message::Binary(frame)).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The connection closed its side: close the WebSocket too.
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut inbound => {}
        () = &mut outbound => {
            // The connection ended it (a DISCONNECT or CONNACK refusal went out with our
            // Close). Keep passing the client's frames on, for the connection to drop, until
            // its Close: closing the TCP socket with input unread would reset it before the
            // client read our last packet (`connection::close_gracefully`).
            let _ = tokio::time::timeout(crate::connection::DRAIN_TIMEOUT, inbound).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 22: the Origin allowlist.
    #[test]
    fn only_listed_origins_pass_once_there_is_a_list() {
        let list = vec!["https://dash.example.com".to_owned()];
        assert!(origin_allowed(&[], Some(b"https://evil.example")));
        assert!(origin_allowed(&list, Some(b"https://dash.example.com")));
        assert!(origin_allowed(&list, Some(b"HTTPS://Dash.Example.com")));
        assert!(!origin_allowed(&list, Some(b"https://evil.example")));
        assert!(!origin_allowed(&list, Some(b"https://dash.example.com.evil.example")));
        assert!(!origin_allowed(&list, Some(b"null")));
        assert!(origin_allowed(&list, None), "not a browser");
    }

    #[test]
    fn the_mqtt_subprotocol_is_preferred_and_mqttv31_accepted() {
        let value = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(choose_subprotocol(Some(&value("mqttv3.1, mqtt"))), Some("mqtt"));
        assert_eq!(choose_subprotocol(Some(&value("mqttv3.1"))), Some("mqttv3.1"));
        assert_eq!(choose_subprotocol(Some(&value("chat"))), None);
        assert_eq!(choose_subprotocol(None), None);
    }
}
