//! Issue 22: `[auth] acl_file`, in Mosquitto's syntax, end to end. Users come from a
//! `mosquitto_passwd` file. Raw MQTT 5 and 3.1.1 clients check the exact reason codes of every
//! refusal: a SUBSCRIBE slot (0x87 / 0x80) among granted ones, a PUBLISH (PUBACK / PUBREC
//! 0x87; 3.1.1: dropped), `%u` and `%c` patterns, a `$stream` replay, a `$share` group, a `$`
//! topic, a retained message, a will (CONNACK 0x87 / 0x05) and the anonymous section. A
//! refused publish is never stored; each refusal is counted on /metrics. mosquitto_sub and
//! mosquitto_pub log in with -u/-P and see the same.

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "common/metrics.rs"]
mod metrics;
#[path = "common/passwd.rs"]
mod passwd;
#[path = "common/raw.rs"]
mod raw;

use std::process::{Command, Stdio};

use broker::ServeProcess;
use bytes::Bytes;
use common::{code, serve_refusing, stderr, strata};
use passwd::mosquitto_passwd_file;
use raw::RawClient;
use strata_frontend::codec::{
    Ack, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Will,
};

const ACL: &str = "\
# Anonymous clients.
topic read public/#
topic write public/anon

user alice
topic readwrite alice/#
topic deny alice/secret/#
topic read orders/#

user bob
topic readwrite bob/#

# Everyone.
pattern readwrite devices/%c/#
pattern read users/%u/#
";

struct Setup {
    _dir: tempfile::TempDir,
    broker: ServeProcess,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    mosquitto_passwd_file(&passwd, &[("alice", "secret"), ("bob", "hunter2")]);
    let acl = dir.path().join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nallow_anonymous = true\npassword_file = {:?}\nacl_file = {:?}\n\n\
             [[streams]]\nname = \"orders\"\ntopics = [\"orders/#\"]\n",
            passwd.to_str().unwrap(),
            acl.to_str().unwrap()
        ),
    )
    .unwrap();
    let broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let mode = broker.line_after("strata: authentication: ");
    assert!(mode.contains("topic rights from"), "{mode}");
    Setup { _dir: dir, broker }
}

async fn login(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    user: Option<(&str, &str)>,
) -> RawClient {
    let mut client =
        RawClient::connect_login(addr, version, client_id, user.map(|u| u.0), user.map(|u| u.1.as_bytes())).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, ReasonCode::Success, "{client_id}"),
        other => panic!("{client_id}: expected CONNACK, got {other:?}"),
    }
    client
}

/// Publishes and returns the PUBACK's (QoS 1) or PUBREC's (QoS 2) reason code; a 3.1.1 QoS 2
/// exchange is completed.
async fn publish(client: &mut RawClient, publish: Publish) -> ReasonCode {
    let (qos, id) = (publish.qos, publish.packet_id.unwrap());
    client.send(&Packet::Publish(publish)).await;
    let ack = match (qos, client.recv().await) {
        (QoS::AtLeastOnce, Some(Packet::PubAck(ack))) | (QoS::ExactlyOnce, Some(Packet::PubRec(ack))) => ack,
        (_, other) => panic!("expected the acknowledgement of {id:?}, got {other:?}"),
    };
    assert_eq!(ack.packet_id, id);
    if qos == QoS::ExactlyOnce && !ack.reason_code.is_error() {
        client.send(&Packet::PubRel(Ack::success(id))).await;
        assert!(matches!(client.recv().await, Some(Packet::PubComp(_))));
    }
    ack.reason_code
}

fn retained(mut message: Publish) -> Publish {
    message.retain = true;
    message
}

/// The next PUBLISH, acknowledged if it needs it.
async fn next_publish(client: &mut RawClient) -> Publish {
    match client.recv().await {
        Some(Packet::Publish(publish)) => {
            if publish.qos == QoS::AtLeastOnce {
                client.send(&Packet::PubAck(raw::ack(publish.packet_id.unwrap()))).await;
            }
            publish
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

fn connect_with_will(version: ProtocolVersion, client_id: &str, topic: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: Some(Will {
            topic: topic.into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: Some("alice".into()),
        password: Some(Bytes::from_static(b"secret")),
        properties: Properties::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_acl_refusals_carry_their_reason_codes_and_store_nothing() {
    use ProtocolVersion::{V3_1_1, V5};
    use QoS::{AtLeastOnce as Q1, AtMostOnce as Q0, ExactlyOnce as Q2};
    let setup = start();
    let (addr, http) = (setup.broker.addr, setup.broker.http_addr());
    let (mut denied_subscribe, mut denied_publish) = (0, 0);

    // Bob watches his own topics: what alice may not publish there must never arrive. His
    // own retained message is the marker a retained SUBSCRIBE must start with.
    let mut bob = login(addr, V5, "bob-watch", Some(("bob", "hunter2"))).await;
    assert_eq!(publish(&mut bob, retained(raw::publish("bob/zz", Q1, Some(1), "mine"))).await, ReasonCode::Success);
    assert_eq!(bob.subscribe(2, &[("bob/#", Q0)], Properties::default()).await, [ReasonCode::GRANTED_QOS_0]);
    assert_eq!(next_publish(&mut bob).await.topic, "bob/zz");

    for version in [V5, V3_1_1] {
        let refused = if version == V5 { ReasonCode::NotAuthorized } else { ReasonCode::UnspecifiedError };
        let sub_id = format!("alice-sub-{version:?}");
        let mut alice = login(addr, version, &sub_id, Some(("alice", "secret"))).await;
        let own_devices = format!("devices/{sub_id}/#");
        let filters = [
            ("alice/inbox", Q1, true),
            ("bob/#", Q1, false),
            // alice/secret/# is denied, and alice/# would include it.
            ("alice/#", Q1, false),
            ("alice/public/#", Q1, true),
            (own_devices.as_str(), Q1, true),
            ("devices/other/#", Q1, false),
            ("users/alice/#", Q1, true),
            ("users/bob/#", Q1, false),
            ("$share/g/alice/jobs", Q1, true),
            ("$share/g/bob/#", Q1, false),
            ("$stream/orders/@earliest", Q1, true),
            ("$SYS/#", Q1, false),
        ];
        let request: Vec<(&str, QoS)> = filters.iter().map(|&(f, q, _)| (f, q)).collect();
        let codes = alice.subscribe(1, &request, Properties::default()).await;
        let want: Vec<ReasonCode> =
            filters.iter().map(|&(_, _, ok)| if ok { ReasonCode::GrantedQos1 } else { refused }).collect();
        assert_eq!(codes, want, "{version:?}");
        denied_subscribe += filters.iter().filter(|f| !f.2).count();

        // A second connection of alice's publishes: `%c` is its own client id.
        let pub_id = format!("alice-pub-{version:?}");
        let mut publisher = login(addr, version, &pub_id, Some(("alice", "secret"))).await;
        let cases = [
            (raw::publish("alice/inbox", Q1, Some(1), "in"), true),
            (raw::publish("bob/x", Q1, Some(2), "forged"), false),
            (raw::publish("bob/x", Q2, Some(3), "forged"), false),
            (retained(raw::publish("bob/r", Q1, Some(4), "forged")), false),
            // Read only.
            (raw::publish("users/alice/x", Q1, Some(5), "no"), false),
            (raw::publish(&format!("devices/{pub_id}/t"), Q1, Some(6), "own device"), true),
            // The subscriber's device, not this client's.
            (raw::publish(&format!("devices/{sub_id}/t"), Q1, Some(7), "other device"), false),
            (raw::publish("$SYS/broker/uptime", Q1, Some(8), "fake"), false),
            (raw::publish("$stream/orders", Q1, Some(9), "fake"), false),
            (raw::publish("alice/secret/k", Q1, Some(10), "no"), false),
            (raw::publish("alice/inbox", Q1, Some(11), "last"), true),
        ];
        for (message, allowed) in cases {
            let topic = message.topic.to_string();
            // MQTT 3.1.1 cannot say no: the refused message is acknowledged and dropped.
            let want = if allowed || version == V3_1_1 { ReasonCode::Success } else { ReasonCode::NotAuthorized };
            assert_eq!(publish(&mut publisher, message).await, want, "{version:?} {topic}");
            denied_publish += usize::from(!allowed);
        }
        // Alice's subscriptions got the allowed messages only (she subscribed to her own
        // device's topics, where her publisher may not write), in order.
        assert_eq!(next_publish(&mut alice).await.payload, "in");
        assert_eq!(next_publish(&mut alice).await.payload, "last");

        // A will alice may not publish refuses the CONNECT: 0x87, or return code 0x05.
        for (topic, want) in [("bob/will", ReasonCode::NotAuthorized), ("alice/will", ReasonCode::Success)] {
            let mut client = RawClient::connect_raw(addr, connect_with_will(version, "alice-will", topic)).await;
            match client.recv().await {
                Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, want, "{version:?} will on {topic}"),
                other => panic!("expected CONNACK, got {other:?}"),
            }
            denied_publish += usize::from(want != ReasonCode::Success);
        }
    }

    // Nothing alice was refused reached bob/...: the first message after them is bob's own,
    // on the same topic (so the same partition, in order).
    bob.send(&Packet::Publish(raw::publish("bob/x", Q0, None, "marker"))).await;
    assert_eq!(next_publish(&mut bob).await.payload, "marker");
    // Nor `$retained`: a SUBSCRIBE to bob/r then bob/zz gets bob/zz's retained message first.
    assert_eq!(
        bob.subscribe(3, &[("bob/r", Q0), ("bob/zz", Q0)], Properties::default()).await,
        [ReasonCode::GRANTED_QOS_0, ReasonCode::GRANTED_QOS_0]
    );
    let first = next_publish(&mut bob).await;
    assert_eq!((first.topic.to_string(), first.retain), ("bob/zz".to_owned(), true));

    // Bob has no rights on the orders stream's topics, nor on everything (the default stream
    // holds any topic); an unknown stream is refused alike.
    let codes = bob
        .subscribe(
            4,
            &[("$stream/orders/@earliest", Q1), ("$stream/default/@earliest", Q1), ("$stream/nosuch/@earliest", Q1)],
            Properties::default(),
        )
        .await;
    assert_eq!(codes, [ReasonCode::NotAuthorized; 3]);
    denied_subscribe += 3;

    // Anonymous clients get the lines before the first `user`, and the `%c` pattern.
    let mut anonymous = login(addr, V3_1_1, "anon-1", None).await;
    let codes = anonymous
        .subscribe(1, &[("public/news", Q0), ("alice/#", Q0), ("devices/anon-1/#", Q0)], Properties::default())
        .await;
    assert_eq!(codes, [ReasonCode::GRANTED_QOS_0, ReasonCode::UnspecifiedError, ReasonCode::GRANTED_QOS_0]);
    denied_subscribe += 1;
    let mut anonymous5 = login(addr, V5, "anon-5", None).await;
    assert_eq!(publish(&mut anonymous5, raw::publish("public/anon", Q1, Some(1), "hi")).await, ReasonCode::Success);
    assert_eq!(
        publish(&mut anonymous5, raw::publish("public/news", Q1, Some(2), "no")).await,
        ReasonCode::NotAuthorized
    );
    // `%u` patterns are not an anonymous client's.
    assert_eq!(anonymous5.subscribe(3, &[("users//x", Q0)], Properties::default()).await, [ReasonCode::NotAuthorized]);
    denied_publish += 1;
    denied_subscribe += 1;

    assert_eq!(
        metrics::counter(http, "strata_acl_denied_total{action=\"subscribe\"}"),
        denied_subscribe as u64,
        "refused subscriptions counted"
    );
    assert_eq!(
        metrics::counter(http, "strata_acl_denied_total{action=\"publish\"}"),
        denied_publish as u64,
        "refused publishes counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_acl_mosquitto_clients_are_refused_and_served() {
    let setup = start();
    let port = setup.broker.port().to_string();
    let mosquitto = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("mosquitto-clients are installed")
    };
    // Bob may not read alice's topics: mosquitto_sub is told so in its SUBACK and gives up.
    let sub = mosquitto(
        "mosquitto_sub",
        &["-V", "mqttv5", "-u", "bob", "-P", "hunter2", "-t", "alice/inbox", "-C", "1", "-W", "30"],
    );
    let said = String::from_utf8_lossy(&sub.stderr);
    assert!(said.contains("denied"), "mosquitto_sub as bob: {said} {:?}", sub.status);
    assert!(sub.stdout.is_empty(), "mosquitto_sub as bob received {:?}", String::from_utf8_lossy(&sub.stdout));
    // Nor publish there: the QoS 1 publish is refused with "Not authorized".
    let publish = mosquitto(
        "mosquitto_pub",
        &["-V", "mqttv5", "-q", "1", "-u", "bob", "-P", "hunter2", "-t", "alice/inbox", "-m", "forged"],
    );
    let said = String::from_utf8_lossy(&publish.stderr);
    assert!(said.contains("Not authorized") || said.contains("not authorised"), "mosquitto_pub as bob: {said}");

    // Alice reads what she may publish.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-q", "1", "-t", "alice/inbox"])
        .args(["-u", "alice", "-P", "secret", "-C", "1", "-W", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let mut published = 0;
    while sub.try_wait().unwrap().is_none() {
        assert!(published < 600, "mosquitto_sub as alice got nothing from {published} publishes");
        let sent = mosquitto(
            "mosquitto_pub",
            &["-V", "mqttv311", "-q", "1", "-u", "alice", "-P", "secret", "-t", "alice/inbox", "-m", "hello"],
        );
        assert!(sent.status.success(), "mosquitto_pub as alice: {}", String::from_utf8_lossy(&sent.stderr));
        published += 1;
    }
    let output = sub.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
}

#[test]
fn auth_acl_bad_file_is_named_by_config_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\ntopic read alice/#\ntopic raed alice/x\n").unwrap();
    let config = format!("[auth]\nacl_file = {:?}\n", acl.to_str().unwrap());
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, &config).unwrap();
    let where_ = format!("{}:3:", acl.display());
    let checked = strata(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(code(&checked), 2, "{}", stderr(&checked));
    assert!(stderr(&checked).contains("auth.acl_file") && stderr(&checked).contains(&where_), "{}", stderr(&checked));
    let served = serve_refusing(&config);
    assert!(!served.status.success());
    assert!(stderr(&served).contains(&where_), "{}", stderr(&served));
}

/// Issue 22: without an ACL file a client still may not publish to a `$` topic: a fake
/// `$SYS` value gets PUBACK 0x87 and never reaches a `$SYS` subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_acl_dollar_topics_are_refused_without_an_acl_file() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let (mut watcher, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "sys-watch").await;
    let filters = [("$SYS/fake/#", QoS::AtMostOnce), ("plain/marker", QoS::AtMostOnce)];
    assert_eq!(
        watcher.subscribe(1, &filters, Properties::default()).await,
        [ReasonCode::GRANTED_QOS_0, ReasonCode::GRANTED_QOS_0]
    );
    let (mut faker, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "sys-faker").await;
    for (n, topic) in ["$SYS/fake/uptime", "$stream/default", "$share/g/x"].into_iter().enumerate() {
        let id = n as u16 + 1;
        assert_eq!(
            publish(&mut faker, raw::publish(topic, QoS::AtLeastOnce, Some(id), "fake")).await,
            ReasonCode::NotAuthorized,
            "{topic}"
        );
    }
    faker.send(&Packet::Publish(raw::publish("plain/marker", QoS::AtMostOnce, None, "marker"))).await;
    assert_eq!(next_publish(&mut watcher).await.topic, "plain/marker");
    assert_eq!(metrics::counter(broker.http_addr(), "strata_acl_denied_total{action=\"publish\"}"), 3);
}

/// Issue 22: a persistent session resumed after the ACL file changed (SIGHUP) keeps only the
/// subscriptions its user may still read. Another user cannot resume it at all (0x87; see
/// tests/auth_client_id_owner.rs), so this is the case left where rights differ on resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_acl_resumed_session_keeps_only_what_its_user_may_read() {
    use QoS::AtMostOnce as Q0;
    let setup = start();
    let (addr, http) = (setup.broker.addr, setup.broker.http_addr());
    let persistent = |user: &str, password: &'static [u8]| {
        let mut properties = Properties::default();
        properties.session_expiry_interval = Some(3600);
        Connect {
            protocol: ProtocolVersion::V5,
            clean_start: false,
            keep_alive: 60,
            client_id: "shared-id".into(),
            will: None,
            username: Some(user.into()),
            password: Some(Bytes::from_static(password)),
            properties,
        }
    };
    let mut alice = RawClient::connect_raw(addr, persistent("alice", b"secret")).await;
    assert!(matches!(alice.recv().await, Some(Packet::ConnAck(c)) if c.reason_code == ReasonCode::Success));
    assert_eq!(alice.subscribe(1, &[("alice/inbox", Q0)], Properties::default()).await, [ReasonCode::GRANTED_QOS_0]);
    alice
        .send(&Packet::Disconnect(Disconnect { reason_code: ReasonCode::Success, properties: Properties::default() }))
        .await;
    assert!(alice.recv().await.is_none(), "the broker closes after DISCONNECT");

    let mut bob = RawClient::connect_raw(addr, persistent("bob", b"hunter2")).await;
    assert!(
        matches!(bob.recv().await, Some(Packet::ConnAck(c)) if c.reason_code == ReasonCode::NotAuthorized),
        "bob may not resume alice's session"
    );

    // Alice may now read only alice/marker.
    let acl = setup._dir.path().join("acl");
    std::fs::write(&acl, ACL.replace("topic readwrite alice/#", "topic write alice/#\ntopic read alice/marker"))
        .unwrap();
    let pid = i32::try_from(setup.broker.pid()).unwrap();
    // SAFETY: kill(2) with a pid we started and a valid signal number touches no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "kill -HUP");
    setup.broker.line_after("strata: ACL file reloaded from ");

    let mut alice = RawClient::connect_raw(addr, persistent("alice", b"secret")).await;
    match alice.recv().await {
        Some(Packet::ConnAck(connack)) => {
            assert_eq!(connack.reason_code, ReasonCode::Success);
            assert!(connack.session_present, "alice resumed her session");
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert_eq!(alice.subscribe(2, &[("alice/marker", Q0)], Properties::default()).await, [ReasonCode::GRANTED_QOS_0]);
    let mut writer = login(addr, ProtocolVersion::V5, "alice-writer", Some(("alice", "secret"))).await;
    assert_eq!(
        publish(&mut writer, raw::publish("alice/inbox", QoS::AtLeastOnce, Some(1), "private")).await,
        ReasonCode::Success
    );
    alice.send(&Packet::Publish(raw::publish("alice/marker", Q0, None, "marker"))).await;
    assert_eq!(next_publish(&mut alice).await.payload, "marker", "the dropped subscription still delivered");
    assert_eq!(metrics::counter(http, "strata_acl_denied_total{action=\"subscribe\"}"), 1);
}
