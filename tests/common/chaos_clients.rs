//! MQTT 5 clients for chaos tests that write what they do into a [`Recorder`]: a QoS 1
//! publisher that follows every payload to its PUBACK across reconnects, a subscriber with a
//! persistent session, and a `$stream` replay. Run them inside a namespace with
//! `Net::block_on`.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::time::{Instant, timeout};

use super::history::{Position, Recorder};

/// After a failed poll, rumqttc reconnects on the next one: wait this long first so a refused
/// or unreachable broker is not retried in a tight loop.
const RETRY: Duration = Duration::from_millis(100);

/// At most this many of a publisher's payloads are unacknowledged at once. Without a window,
/// rumqttc would hand the whole load to the socket at once and a fault could strike after
/// the last PUBLISH went out; with one, a fault after the n-th PUBACK finds the rest of the
/// load still to send.
const WINDOW: usize = 20;

/// Options for a client of the broker at `addr`. Persistent: Clean Start off and a session
/// that outlives the connection, so a reconnect resumes it. A short keep-alive, so a cut
/// connection is noticed within seconds.
pub fn options(id: &str, addr: SocketAddr, persistent: bool, keep_alive: Duration) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(keep_alive);
    options.set_connection_timeout(3);
    if persistent {
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(600));
    }
    options
}

/// What a client saw of its connection; shared, so a test can wait for it.
#[derive(Default)]
pub struct Connection {
    /// CONNACKs received.
    pub connects: AtomicUsize,
    /// Times the connection failed (errors from the event loop).
    pub failures: AtomicUsize,
    /// Set when the client is done (all acked, or all received).
    pub finished: AtomicBool,
}

impl Connection {
    fn connack(&self, id: &str, session_present: bool) {
        let n = self.connects.fetch_add(1, Ordering::SeqCst) + 1;
        // A resumed persistent session must be there: if the broker lost it, the client's
        // queued publishes are dropped and deliveries stop, which the test must hear about.
        assert!(n == 1 || session_present, "{id}: the broker lost the session (reconnect {n}, session_present false)");
    }

    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    pub fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

fn reason_code(reason: PubAckReason) -> u8 {
    match reason {
        PubAckReason::Success => 0x00,
        PubAckReason::NoMatchingSubscribers => 0x10,
        PubAckReason::UnspecifiedError => 0x80,
        PubAckReason::ImplementationSpecificError => 0x83,
        PubAckReason::NotAuthorized => 0x87,
        PubAckReason::TopicNameInvalid => 0x90,
        PubAckReason::PacketIdentifierInUse => 0x91,
        PubAckReason::QuotaExceeded => 0x97,
        PubAckReason::PayloadFormatInvalid => 0x99,
    }
}

/// Publishes `payloads` on `topic` at QoS 1 as client `id` (a persistent session) and records
/// each one as sent, then with its PUBACK's reason. Returns when every payload is acked or at
/// `deadline`; what is unacked then stays "unknown" in the history. `on_ack(n)` runs on the
/// event loop after the n-th acknowledgement, before the next packet is handled: a test's
/// fault then strikes while the rest of the load is in flight.
///
/// rumqttc says which packet id each publish went out with (`Outgoing::Publish`) but not which
/// payload: requests leave in the order they were made, so the n-th new packet id is the n-th
/// payload. A packet id already in flight is a retransmission after a reconnect.
pub async fn publish_qos1(
    recorder: &Recorder,
    options: MqttOptions,
    topic: &str,
    payloads: Vec<String>,
    connection: &Connection,
    deadline: Duration,
    on_ack: &(dyn Fn(usize) + Sync),
) {
    let id = options.client_id();
    let (client, mut events) = AsyncClient::new(options, 16);
    let queued: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let total = payloads.len();
    let feeder = {
        let (queued, topic, window) = (queued.clone(), topic.to_owned(), window.clone());
        async move {
            for payload in payloads {
                // Given back by the pump at the payload's PUBACK.
                let Ok(permit) = window.acquire().await else { break };
                permit.forget();
                queued.lock().unwrap().push_back(payload.clone());
                if client.publish(&topic, QoS::AtLeastOnce, false, payload).await.is_err() {
                    break;
                }
            }
            client
        }
    };
    let pump = async {
        let end = Instant::now() + deadline;
        let mut in_flight: HashMap<u16, String> = HashMap::new();
        let mut acked = 0;
        while acked < total {
            let Ok(event) = timeout(end.saturating_duration_since(Instant::now()), events.poll()).await else {
                break;
            };
            match event {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = in_flight.entry(pkid) {
                        let payload =
                            queued.lock().unwrap().pop_front().expect("a publish went out that was never made");
                        recorder.sent(&id, topic, &payload, 1);
                        slot.insert(payload);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(payload) = in_flight.remove(&ack.pkid) {
                        recorder.acked(&id, &payload, reason_code(ack.reason));
                        acked += 1;
                        window.add_permits(1);
                        on_ack(acked);
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(connack))) => connection.connack(&id, connack.session_present),
                Ok(_) => {}
                Err(_) => {
                    connection.failures.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        connection.finished.store(true, Ordering::SeqCst);
        // Unblocks the feeder when the deadline came first.
        window.close();
    };
    let (client, ()) = tokio::join!(feeder, pump);
    let _ = client.disconnect().await;
    // Let the DISCONNECT out; the deadline bounds it.
    let _ = timeout(Duration::from_secs(2), events.poll()).await;
}

/// Records one delivery: its position when the broker sent `stream-offset` and
/// `stream-partition` (a `$stream` subscription of `stream`).
fn record(recorder: &Recorder, id: &str, stream: Option<&str>, publish: &rumqttc::v5::mqttbytes::v5::Publish) {
    let user = publish.properties.as_ref().map(|p| p.user_properties.as_slice()).unwrap_or_default();
    let property = |name: &str| user.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.parse::<u64>().ok());
    let position = match (stream, property("stream-partition"), property("stream-offset")) {
        (Some(stream), Some(partition), Some(offset)) => {
            Some(Position { stream: stream.to_owned(), partition: partition as u32, offset })
        }
        _ => None,
    };
    let topic = String::from_utf8_lossy(&publish.topic);
    recorder.delivered(id, &topic, &String::from_utf8_lossy(&publish.payload), position);
}

/// A subscriber: connects, subscribes to `filter` at QoS 1 (with SUBSCRIBE user properties
/// `user`), and returns once the SUBACK is in. [`Subscriber::run`] then records deliveries.
pub struct Subscriber {
    id: String,
    stream: Option<String>,
    client: AsyncClient,
    events: EventLoop,
}

impl Subscriber {
    /// `stream`: the stream a `$stream/...` filter reads, for the deliveries' positions.
    pub async fn subscribe(
        options: MqttOptions,
        filter: &str,
        user: &[(&str, &str)],
        stream: Option<&str>,
        connection: &Connection,
    ) -> Subscriber {
        let id = options.client_id();
        let (client, mut events) = AsyncClient::new(options, 16);
        let properties = SubscribeProperties {
            id: None,
            user_properties: user.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        };
        client.subscribe_with_properties(filter, QoS::AtLeastOnce, properties.clone()).await.expect("queue SUBSCRIBE");
        let end = Instant::now() + Duration::from_secs(30);
        // Under packet loss the first connection may fail before its SUBACK: connect again
        // (the next poll does) and subscribe again, within the same 30 s.
        let mut subscribe_again = false;
        loop {
            let event = timeout(end.saturating_duration_since(Instant::now()), events.poll())
                .await
                .unwrap_or_else(|_| panic!("{id}: no SUBACK within 30 s"));
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    assert!(Instant::now() < end, "{id}: connection failed before its SUBACK: {error}");
                    subscribe_again = true;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match event {
                Event::Incoming(Packet::ConnAck(connack)) => {
                    connection.connack(&id, connack.session_present);
                    if std::mem::take(&mut subscribe_again) {
                        client
                            .subscribe_with_properties(filter, QoS::AtLeastOnce, properties.clone())
                            .await
                            .expect("queue SUBSCRIBE");
                    }
                }
                Event::Incoming(Packet::SubAck(suback)) => {
                    assert!(
                        suback
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_))),
                        "{id}: SUBSCRIBE {filter} refused: {suback:?}"
                    );
                    break;
                }
                _ => {}
            }
        }
        Subscriber { id, stream: stream.map(str::to_owned), client, events }
    }

    /// Records deliveries until `done()` holds and this subscriber has every payload acked so
    /// far, or until `deadline`. Reconnects (resuming the session) when the connection fails.
    pub async fn run(
        mut self,
        recorder: &Recorder,
        connection: &Connection,
        done: impl Fn() -> bool,
        deadline: Duration,
    ) {
        let end = Instant::now() + deadline;
        while Instant::now() < end && !(done() && recorder.has_every_acked(&self.id)) {
            // Short slices, so `done` is looked at again while nothing arrives.
            let Ok(event) = timeout(Duration::from_millis(200), self.events.poll()).await else { continue };
            match event {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    record(recorder, &self.id, self.stream.as_deref(), &publish);
                }
                Ok(Event::Incoming(Packet::ConnAck(connack))) => connection.connack(&self.id, connack.session_present),
                Ok(_) => {}
                Err(_) => {
                    connection.failures.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        connection.finished.store(true, Ordering::SeqCst);
        let _ = self.client.disconnect().await;
        let _ = timeout(Duration::from_secs(2), self.events.poll()).await;
    }
}

/// Replays `$stream/<stream>` from `earliest` as client `id` until it has every acknowledged
/// payload, or for `deadline`.
pub async fn replay(recorder: &Recorder, addr: SocketAddr, id: &str, stream: &str, deadline: Duration) {
    let connection = Connection::default();
    let options = options(id, addr, false, Duration::from_secs(10));
    let filter = format!("$stream/{stream}");
    let subscriber =
        Subscriber::subscribe(options, &filter, &[("stream-offset", "earliest")], Some(stream), &connection).await;
    subscriber.run(recorder, &connection, || true, deadline).await;
}
