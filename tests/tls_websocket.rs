//! Issue 22: MQTT over WebSocket over TLS (`[mqtt] wss_listen`). A client speaking TLS
//! (rustls, trusting only the test CA), then the WebSocket upgrade on /mqtt, then MQTT
//! connects and publishes, and a plaintext subscriber receives it; a client that does not
//! trust the CA gets no upgrade.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "common/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use broker::ServeProcess;
use futures_util::{SinkExt, StreamExt};
use mosquitto::MosquittoSub;
use rustls::pki_types::ServerName;
use tls::{Ca, tls_section};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const DEADLINE: Duration = Duration::from_secs(30);

/// CONNECT, MQTT 3.1.1, clean session, keep alive 60, client id "wss".
const CONNECT: [u8; 17] = [0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 3, b'w', b's', b's'];
/// CONNACK, session not present, accepted.
const CONNACK_ACCEPTED: [u8; 4] = [0x20, 2, 0, 0];

/// TLS to `addr` trusting only `ca`, then the WebSocket upgrade on /mqtt.
async fn wss(
    addr: SocketAddr,
    ca: &Ca,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(ca.client_config());
    let server_name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(server_name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
    let mut request = format!("wss://127.0.0.1:{}/mqtt", addr.port()).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    let (ws, _) =
        tokio_tungstenite::client_async(request, tls).await.map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mqtt_over_websocket_over_tls_connects_and_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let stranger = Ca::new(dir.path(), "stranger");
    let server = ca.server(dir.path(), "server");
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[mqtt]\nwss_listen = \"127.0.0.1:0\"\n{}", tls_section(&server, None))).unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let addr = broker.wss_addr();
    let port = broker.port();
    let subscriber = tokio::task::spawn_blocking(move || MosquittoSub::subscribed(port, "wss/#", &[])).await.unwrap();

    let untrusted = tokio::time::timeout(DEADLINE, wss(addr, &stranger)).await.expect("refused in time");
    assert!(untrusted.is_err(), "a client that does not trust our CA got a WebSocket");

    let mut ws = tokio::time::timeout(DEADLINE, wss(addr, &ca)).await.expect("in time").expect("wss");
    ws.send(Message::Binary(CONNECT.to_vec().into())).await.unwrap();
    let connack = loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.expect("CONNACK in time") {
            Some(Ok(Message::Binary(data))) => break data,
            Some(Ok(_)) => {}
            other => panic!("expected CONNACK, got {other:?}"),
        }
    };
    assert_eq!(&connack[..], &CONNACK_ACCEPTED);
    // PUBLISH QoS 0, topic "wss/hello", payload "over wss".
    let mut publish = vec![0x30, 0, 0, 9];
    publish.extend_from_slice(b"wss/hello");
    publish.extend_from_slice(b"over wss");
    publish[1] = (publish.len() - 2) as u8;
    ws.send(Message::Binary(publish.into())).await.unwrap();
    let received = tokio::task::spawn_blocking(move || subscriber.next_message()).await.unwrap();
    assert_eq!(received, "wss/hello over wss");
}
