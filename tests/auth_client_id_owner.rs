//! Issue 22: a client id is tied to the user that owns its session. With a password file
//! (written by `mosquitto_passwd`), bob can neither take over alice's live connection nor
//! resume or (clean start) discard her stored persistent session: CONNACK 0x87 (MQTT 5) /
//! 0x05 (3.1.1), and her connection and session are left as they were. Alice herself takes
//! over and resumes as before, and gets what was queued for her while bob tried.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/passwd.rs"]
mod passwd;
#[path = "common/raw.rs"]
mod raw;

use broker::ServeProcess;
use passwd::mosquitto_passwd_file;
use raw::RawClient;
use strata_frontend::codec::{
    ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
};

const CLIENT_ID: &str = "alice-phone";

/// Sends a CONNECT for `CLIENT_ID` as `user` and returns the client and its CONNACK.
async fn connect_as(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    user: &str,
    password: &str,
    clean_start: bool,
) -> (RawClient, ConnAck) {
    let mut properties = Properties::default();
    if version == ProtocolVersion::V5 {
        properties.session_expiry_interval = Some(3600);
    }
    let connect = Connect {
        protocol: version,
        clean_start,
        keep_alive: 60,
        client_id: CLIENT_ID.into(),
        will: None,
        username: Some(user.into()),
        password: Some(bytes::Bytes::copy_from_slice(password.as_bytes())),
        properties,
    };
    let mut client = RawClient::connect_raw(addr, connect).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) => (client, connack),
        other => panic!("expected a CONNACK for {user}, got {other:?}"),
    }
}

/// Bob's attempt on alice's client id: refused with Not authorized, and closed.
async fn bob_is_refused(addr: std::net::SocketAddr, version: ProtocolVersion, clean_start: bool) {
    let (mut bob, connack) = connect_as(addr, version, "bob", "hunter2", clean_start).await;
    assert_eq!(connack.reason_code, ReasonCode::NotAuthorized, "bob {version:?} clean_start={clean_start}");
    assert!(!connack.session_present);
    assert!(bob.recv().await.is_none(), "the refused connection stays open");
}

/// Bob publishes `payload` to `news/today` at QoS 1 under his own client id.
async fn bob_publishes(addr: std::net::SocketAddr, payload: &'static str) {
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "bob-desk".into(),
        will: None,
        username: Some("bob".into()),
        password: Some(bytes::Bytes::from_static(b"hunter2")),
        properties: Properties::default(),
    };
    let mut bob = RawClient::connect_raw(addr, connect).await;
    assert!(matches!(bob.recv().await, Some(Packet::ConnAck(c)) if c.reason_code == ReasonCode::Success));
    bob.send(&Packet::Publish(raw::publish("news/today", QoS::AtLeastOnce, Some(1), payload))).await;
    assert!(matches!(bob.recv().await, Some(Packet::PubAck(_))), "bob's publish acknowledged");
}

/// The next PUBLISH alice gets, acknowledged.
async fn next_message(alice: &mut RawClient) -> Publish {
    match alice.recv().await {
        Some(Packet::Publish(publish)) => {
            if let Some(packet_id) = publish.packet_id {
                alice.send(&Packet::PubAck(raw::ack(packet_id))).await;
            }
            publish
        }
        other => panic!("alice expected a message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_another_user_cannot_take_over_resume_or_discard_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    mosquitto_passwd_file(&passwd, &[("alice", "secret"), ("bob", "hunter2")]);
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        format!("[auth]\nallow_anonymous = false\npassword_file = {:?}\n", passwd.to_str().unwrap()),
    )
    .unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let addr = broker.addr;
    use ProtocolVersion::{V3_1_1, V5};

    // Alice's persistent session, connected.
    let (mut alice, connack) = connect_as(addr, V5, "alice", "secret", false).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert_eq!(
        alice.subscribe(1, &[("news/#", QoS::AtLeastOnce)], Properties::default()).await,
        vec![ReasonCode::GrantedQos1]
    );

    // (a) Bob cannot take the live connection over, in either protocol, clean start or not.
    for version in [V5, V3_1_1] {
        for clean_start in [false, true] {
            bob_is_refused(addr, version, clean_start).await;
        }
    }
    // Alice's connection is still there, with its subscription.
    bob_publishes(addr, "while connected").await;
    assert_eq!(next_message(&mut alice).await.payload, "while connected");

    // Alice herself takes it over: the session is hers.
    let (mut alice, connack) = connect_as(addr, V5, "alice", "secret", false).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert!(connack.session_present, "alice's takeover resumes her session");
    alice
        .send(&Packet::Disconnect(Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() }))
        .await;
    // "while connected" may come again first, if the takeover overtook its PUBACK.
    for _ in 0..3 {
        match alice.recv().await {
            None => break,
            Some(Packet::Publish(publish)) => assert_eq!(publish.payload, "while connected"),
            Some(other) => panic!("alice expected the close, got {other:?}"),
        }
    }

    // (b) Disconnected: a message is queued for her; bob can neither resume nor discard it.
    bob_publishes(addr, "while away").await;
    for version in [V5, V3_1_1] {
        for clean_start in [false, true] {
            bob_is_refused(addr, version, clean_start).await;
        }
    }

    // Alice resumes: the session survived bob's attempts, with her queued message.
    let (mut alice, connack) = connect_as(addr, V5, "alice", "secret", false).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert!(connack.session_present, "alice's session survived bob's attempts");
    // Again, "while connected" may still be in flight from before; then comes "while away".
    let mut payload = next_message(&mut alice).await.payload;
    if payload == "while connected" {
        payload = next_message(&mut alice).await.payload;
    }
    assert_eq!(payload, "while away");
}
