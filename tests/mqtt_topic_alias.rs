//! Topic aliases (MQTT 5), both ways. Inbound: CONNACK announces Topic Alias Maximum 64, a
//! PUBLISH sets an alias and later ones use it with an empty topic. Outbound: a subscriber
//! that allows aliases gets the topic once, then the alias with an empty topic.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::collections::HashMap;

use broker::ServeProcess;
use raw::{RawClient, publish};
use strata_frontend::codec::{Packet, Properties, ProtocolVersion, QoS, ReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_are_resolved_inbound_and_assigned_outbound() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(dir.path());

    let mut allow = Properties::default();
    allow.topic_alias_maximum = Some(2);
    let (mut subscriber, _) = RawClient::connect_props(broker.addr, ProtocolVersion::V5, "alias-sub", allow).await;
    assert_eq!(
        subscriber.subscribe(1, &[("alias/#", QoS::AtMostOnce)], Properties::default()).await,
        vec![ReasonCode::GRANTED_QOS_0]
    );

    let (mut publisher, connack) = RawClient::connect(broker.addr, ProtocolVersion::V5, "alias-pub").await;
    assert_eq!(connack.properties.topic_alias_maximum, Some(64), "the default Topic Alias Maximum");
    let with_alias = |topic: &str, alias: u16, payload: &'static str| {
        let mut p = publish(topic, QoS::AtMostOnce, None, payload);
        p.properties.topic_alias = Some(alias);
        Packet::Publish(p)
    };
    // Three topics, but the subscriber allows only two aliases.
    publisher.send(&with_alias("alias/one", 7, "1")).await;
    publisher.send(&with_alias("", 7, "2")).await;
    publisher.send(&with_alias("alias/two", 64, "3")).await;
    publisher.send(&with_alias("", 64, "4")).await;
    publisher.send(&Packet::Publish(publish("alias/three", QoS::AtMostOnce, None, "5"))).await;
    publisher.send(&with_alias("", 7, "6")).await;
    publisher.send(&Packet::Publish(publish("alias/three", QoS::AtMostOnce, None, "7"))).await;

    let mut aliases: HashMap<u16, String> = HashMap::new();
    let mut got = Vec::new();
    let mut wire = Vec::new();
    while got.len() < 7 {
        match subscriber.recv().await {
            Some(Packet::Publish(p)) => {
                let alias = p.properties.topic_alias;
                wire.push((p.topic.to_string(), alias));
                let topic = match alias {
                    Some(alias) if p.topic.is_empty() => aliases.get(&alias).cloned().expect("a known alias"),
                    Some(alias) => {
                        aliases.insert(alias, p.topic.to_string());
                        p.topic.to_string()
                    }
                    None => p.topic.to_string(),
                };
                got.push((topic, String::from_utf8(p.payload.to_vec()).unwrap()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<(String, String)> = [
        ("alias/one", "1"),
        ("alias/one", "2"),
        ("alias/two", "3"),
        ("alias/two", "4"),
        ("alias/three", "5"),
        ("alias/one", "6"),
        ("alias/three", "7"),
    ]
    .iter()
    .map(|(t, p)| (t.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, expected, "every message under its real topic");
    let s = |t: &str| t.to_string();
    assert_eq!(
        wire,
        vec![
            (s("alias/one"), Some(1)),
            (s(""), Some(1)),
            (s("alias/two"), Some(2)),
            (s(""), Some(2)),
            (s("alias/three"), None),
            (s(""), Some(1)),
            (s("alias/three"), None),
        ]
    );
}
