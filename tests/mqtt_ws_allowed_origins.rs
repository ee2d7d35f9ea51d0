//! Issue 22: `mqtt.ws_allowed_origins`. Once it lists origins, a WebSocket handshake from a
//! browser page of another origin gets HTTP 403 before any MQTT; a listed origin, and a
//! client that sends no `Origin` (not a browser), connect and get their CONNACK.

#[path = "common/broker.rs"]
mod broker;

use broker::ServeProcess;
use futures_util::{SinkExt, StreamExt};
use strata_frontend::codec::{self, Connect, Packet, Properties, ProtocolVersion};
use tokio::net::TcpStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Opens MQTT over WebSocket with `origin` (if any) and returns the CONNACK's first bytes, or
/// the handshake's error.
async fn connect(addr: std::net::SocketAddr, origin: Option<&'static str>) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut request = format!("ws://{addr}/mqtt").into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", HeaderValue::from_static(origin));
    }
    let (mut ws, _) = client_async(request, tcp).await.map_err(|e| e.to_string())?;
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "ws-origin".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    let mut bytes = bytes::BytesMut::new();
    codec::encode(&Packet::Connect(Box::new(connect)), ProtocolVersion::V5, &mut bytes).unwrap();
    ws.send(Message::binary(bytes.to_vec())).await.map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
        .await
        .map_err(|_| "no reply in 30 s".to_owned())?;
    match reply {
        Some(Ok(Message::Binary(data))) => Ok(data.to_vec()),
        other => Err(format!("expected a binary CONNACK, got {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_origins_may_open_mqtt_over_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nws_allowed_origins = [\"https://dash.example.com\"]\n").unwrap();
    let broker = ServeProcess::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--ws", "127.0.0.1:0"],
    );
    let addr = broker.ws_addr();

    let refused = connect(addr, Some("https://evil.example")).await.unwrap_err();
    assert!(refused.contains("403"), "{refused}");
    for origin in [Some("https://dash.example.com"), None] {
        let connack = connect(addr, origin).await.unwrap_or_else(|e| panic!("{origin:?}: {e}"));
        // CONNACK, remaining length, flags, reason code 0x00.
        assert_eq!(connack[0], 0x20, "{origin:?}: {connack:?}");
        assert_eq!(connack[3], 0x00, "{origin:?}: {connack:?}");
    }
}
