//! A history checker for cluster and chaos tests (issues 20 and 21): the test records every
//! publish with its outcome and every delivery with where it came from, and [`History::check`]
//! finds what a broker must never do:
//!
//! - **acknowledged loss**: a payload the broker PUBACKed (or PUBRECed) with a success code
//!   that a reader which must see everything (a subscriber present throughout, a `$stream`
//!   replay from `earliest`) never got;
//! - **offset disorder**: one reader got, in one partition, a new offset below one it had
//!   already seen;
//! - **offset conflicts**: two different payloads at one (stream, partition, offset), across
//!   all readers;
//! - **duplicates QoS does not allow**: a QoS 0 or QoS 2 payload delivered twice to one
//!   reader, and payloads nobody published.
//!
//! QoS 1 duplicates (at least once) are allowed; they are counted in the report, apart.
//! Pure: no sockets, no clocks beyond the times the caller passes in, so it is unit-tested on
//! hand-written histories below.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What became of one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, and no answer: the connection died or the test ended first. It may or may not
    /// have been stored; the checker asks nothing of it.
    Unknown,
    /// PUBACK (QoS 1) or PUBREC (QoS 2) with this reason code. Below 0x80 the broker took
    /// responsibility for the message; from 0x80 it refused it.
    Acked(u8),
}

impl Outcome {
    /// Whether the broker promised to keep the message.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Acked(code) if code < 0x80)
    }
}

/// One publish, as the publishing client saw it.
#[derive(Debug, Clone)]
pub struct Publish {
    pub client: String,
    pub topic: String,
    pub payload: String,
    pub qos: u8,
    pub outcome: Outcome,
    /// Since the history began.
    pub at: Duration,
}

/// Where a delivery sits in a stream: known for `$stream/...` deliveries to MQTT 5 clients
/// (the `stream-partition` and `stream-offset` user properties).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
}

/// One message a client received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub client: String,
    pub topic: String,
    pub payload: String,
    pub position: Option<Position>,
    pub at: Duration,
}

/// Everything a test saw: publishes and deliveries, in the order recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub publishes: Vec<Publish>,
    pub deliveries: Vec<Delivery>,
}

/// A shared recorder: publisher and subscriber tasks (on any thread, in any namespace) write
/// into one history.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<History>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder { start: Instant::now(), inner: Arc::default() }
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        // A panicking test thread poisons it; the history is still worth reading.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A publish went out; its outcome is [`Outcome::Unknown`] until [`Recorder::acked`].
    pub fn sent(&self, client: &str, topic: &str, payload: &str, qos: u8) {
        let at = self.start.elapsed();
        self.lock().publishes.push(Publish {
            client: client.to_owned(),
            topic: topic.to_owned(),
            payload: payload.to_owned(),
            qos,
            outcome: Outcome::Unknown,
            at,
        });
    }

    /// The broker answered `client`'s publish of `payload` with `reason`.
    pub fn acked(&self, client: &str, payload: &str, reason: u8) {
        let mut history = self.lock();
        let publish = history
            .publishes
            .iter_mut()
            .rev()
            .find(|p| p.client == client && p.payload == payload)
            .unwrap_or_else(|| panic!("an ack for {payload:?}, which {client} never sent"));
        publish.outcome = Outcome::Acked(reason);
    }

    pub fn delivered(&self, client: &str, topic: &str, payload: &str, position: Option<Position>) {
        let at = self.start.elapsed();
        self.lock().deliveries.push(Delivery {
            client: client.to_owned(),
            topic: topic.to_owned(),
            payload: payload.to_owned(),
            position,
            at,
        });
    }

    /// How many distinct payloads `client` has received so far.
    pub fn received_by(&self, client: &str) -> usize {
        self.lock().deliveries.iter().filter(|d| d.client == client).map(|d| &d.payload).collect::<HashSet<_>>().len()
    }

    /// The payloads the broker acknowledged with success so far.
    pub fn acked_payloads(&self) -> HashSet<String> {
        self.lock().publishes.iter().filter(|p| p.outcome.is_success()).map(|p| p.payload.clone()).collect()
    }

    /// Whether `client` has received every payload acknowledged so far.
    pub fn has_every_acked(&self, client: &str) -> bool {
        let history = self.lock();
        let got: HashSet<&str> =
            history.deliveries.iter().filter(|d| d.client == client).map(|d| d.payload.as_str()).collect();
        history.publishes.iter().filter(|p| p.outcome.is_success()).all(|p| got.contains(p.payload.as_str()))
    }

    pub fn snapshot(&self) -> History {
        self.lock().clone()
    }
}

/// What [`History::check`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// (reader, payload): acknowledged, never delivered to a reader that had to get it.
    pub lost: Vec<(String, String)>,
    /// (reader, position delivered, highest offset that reader had seen in that partition).
    pub out_of_order: Vec<(String, Position, u64)>,
    /// (position, the payloads found there).
    pub conflicts: Vec<(Position, Vec<String>)>,
    /// (reader, payload, times delivered, its QoS): duplicates the QoS does not allow.
    pub forbidden_duplicates: Vec<(String, String, usize, u8)>,
    /// (reader, payload): delivered, never published.
    pub phantoms: Vec<(String, String)>,
    /// (reader, payload, times delivered): QoS 1 duplicates, allowed (at least once).
    pub qos1_duplicates: Vec<(String, String, usize)>,
    /// Counts, for the report's summary line.
    pub acked: usize,
    pub unknown: usize,
    pub deliveries: usize,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.lost.is_empty()
            && self.out_of_order.is_empty()
            && self.conflicts.is_empty()
            && self.forbidden_duplicates.is_empty()
            && self.phantoms.is_empty()
    }

    /// Panics with the whole report unless no violation was found.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "history check failed:\n{self}");
    }
}

/// At most this many items of each kind in the text; the count says how many there were.
const SHOWN: usize = 20;

fn section<T>(f: &mut fmt::Formatter<'_>, title: &str, items: &[T], line: impl Fn(&T) -> String) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(f, "{title} ({}):", items.len())?;
    for item in items.iter().take(SHOWN) {
        writeln!(f, "  {}", line(item))?;
    }
    if items.len() > SHOWN {
        writeln!(f, "  ... and {} more", items.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} acknowledged publishes, {} with unknown outcome, {} deliveries",
            self.acked, self.unknown, self.deliveries
        )?;
        section(f, "ACKNOWLEDGED BUT LOST", &self.lost, |(reader, payload)| {
            format!("{payload:?} never reached {reader}")
        })?;
        section(f, "OFFSETS OUT OF ORDER", &self.out_of_order, |(reader, at, seen)| {
            format!("{reader} got {}/{} offset {} after offset {seen}", at.stream, at.partition, at.offset)
        })?;
        section(f, "TWO PAYLOADS AT ONE OFFSET", &self.conflicts, |(at, payloads)| {
            format!("{}/{} offset {}: {payloads:?}", at.stream, at.partition, at.offset)
        })?;
        section(f, "DUPLICATES THE QOS FORBIDS", &self.forbidden_duplicates, |(reader, payload, n, qos)| {
            format!("{payload:?} (QoS {qos}) reached {reader} {n} times")
        })?;
        section(f, "DELIVERED BUT NEVER PUBLISHED", &self.phantoms, |(reader, payload)| {
            format!("{payload:?} reached {reader}")
        })?;
        section(f, "QoS 1 duplicates (allowed)", &self.qos1_duplicates, |(reader, payload, n)| {
            format!("{payload:?} reached {reader} {n} times")
        })
    }
}

impl History {
    /// Checks the history. `complete_readers` are the clients that had to receive every
    /// acknowledged payload: subscribers present throughout (or with a persistent session),
    /// and replays of the stream from `earliest` made after the load.
    pub fn check(&self, complete_readers: &[&str]) -> Report {
        let mut report = Report {
            acked: self.publishes.iter().filter(|p| p.outcome.is_success()).count(),
            unknown: self.publishes.iter().filter(|p| p.outcome == Outcome::Unknown).count(),
            deliveries: self.deliveries.len(),
            ..Report::default()
        };

        // Payload -> the QoS that decides how often it may arrive: published at QoS 1 even
        // once, it may arrive more than once.
        let mut published: HashMap<&str, u8> = HashMap::new();
        for p in &self.publishes {
            let qos = published.entry(&p.payload).or_insert(p.qos);
            if p.qos == 1 {
                *qos = 1;
            }
        }

        // Reader -> payload -> times delivered, in first-delivery order for a stable report.
        let mut per_reader: BTreeMap<&str, Vec<(&str, usize)>> = BTreeMap::new();
        for d in &self.deliveries {
            let counts = per_reader.entry(&d.client).or_default();
            match counts.iter_mut().find(|(payload, _)| *payload == d.payload) {
                Some((_, n)) => *n += 1,
                None => counts.push((&d.payload, 1)),
            }
        }

        for reader in complete_readers {
            let got: HashSet<&str> =
                per_reader.get(reader).map(|c| c.iter().map(|(p, _)| *p).collect()).unwrap_or_default();
            let mut seen = HashSet::new();
            for p in self.publishes.iter().filter(|p| p.outcome.is_success()) {
                if !got.contains(p.payload.as_str()) && seen.insert(p.payload.as_str()) {
                    report.lost.push((reader.to_string(), p.payload.clone()));
                }
            }
        }

        for (reader, counts) in &per_reader {
            for (payload, n) in counts {
                let Some(&qos) = published.get(payload) else {
                    report.phantoms.push((reader.to_string(), payload.to_string()));
                    continue;
                };
                if *n > 1 {
                    if qos == 1 {
                        report.qos1_duplicates.push((reader.to_string(), payload.to_string(), *n));
                    } else {
                        report.forbidden_duplicates.push((reader.to_string(), payload.to_string(), *n, qos));
                    }
                }
            }
        }

        // Offsets: one payload per position across every reader, and within one reader each
        // partition's new offsets only go up. A position seen again with the same payload is a
        // redelivery (counted above as a duplicate), not disorder.
        let mut at_position: BTreeMap<&Position, Vec<&str>> = BTreeMap::new();
        let mut highest: HashMap<(&str, &str, u32), u64> = HashMap::new();
        let mut delivered_at: HashSet<(&str, &Position)> = HashSet::new();
        for d in &self.deliveries {
            let Some(position) = &d.position else { continue };
            let payloads = at_position.entry(position).or_default();
            if !payloads.contains(&d.payload.as_str()) {
                payloads.push(&d.payload);
            }
            if !delivered_at.insert((&d.client, position)) {
                continue;
            }
            let key = (d.client.as_str(), position.stream.as_str(), position.partition);
            match highest.get(&key) {
                Some(&top) if position.offset < top => {
                    report.out_of_order.push((d.client.clone(), position.clone(), top));
                }
                _ => {
                    highest.insert(key, position.offset);
                }
            }
        }
        for (position, payloads) in at_position {
            if payloads.len() > 1 {
                report.conflicts.push((position.clone(), payloads.iter().map(|p| p.to_string()).collect()));
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(payload: &str, qos: u8, outcome: Outcome) -> Publish {
        Publish { client: "pub".into(), topic: "t".into(), payload: payload.into(), qos, outcome, at: Duration::ZERO }
    }

    fn at(partition: u32, offset: u64) -> Option<Position> {
        Some(Position { stream: "default".into(), partition, offset })
    }

    fn delivery(client: &str, payload: &str, position: Option<Position>) -> Delivery {
        Delivery { client: client.into(), topic: "t".into(), payload: payload.into(), position, at: Duration::ZERO }
    }

    /// m0..m2 acked at QoS 1, read by "live" and by "replay" at offsets 0..2.
    fn clean() -> History {
        let names = ["m0", "m1", "m2"];
        History {
            publishes: names.iter().map(|n| publish(n, 1, Outcome::Acked(0))).collect(),
            deliveries: names
                .iter()
                .enumerate()
                .flat_map(|(i, n)| [delivery("live", n, None), delivery("replay", n, at(0, i as u64))])
                .collect(),
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let report = clean().check(&["live", "replay"]);
        assert!(report.is_ok(), "{report}");
        assert_eq!((report.acked, report.unknown, report.deliveries), (3, 0, 6));
        report.assert_ok();
    }

    #[test]
    fn an_acked_payload_missing_from_a_complete_reader_is_loss() {
        let mut history = clean();
        history.deliveries.retain(|d| !(d.client == "replay" && d.payload == "m1"));
        let report = history.check(&["live", "replay"]);
        assert_eq!(report.lost, vec![("replay".to_string(), "m1".to_string())]);
        let text = report.to_string();
        assert!(text.contains("ACKNOWLEDGED BUT LOST") && text.contains("\"m1\" never reached replay"), "{text}");
        // A reader that did not have to see everything is not held to it.
        assert!(history.check(&["live"]).is_ok());
    }

    #[test]
    fn unknown_and_refused_publishes_may_be_missing() {
        let mut history = clean();
        history.publishes.push(publish("m3", 1, Outcome::Unknown));
        history.publishes.push(publish("m4", 1, Outcome::Acked(0x97)));
        let report = history.check(&["live", "replay"]);
        assert!(report.is_ok(), "{report}");
        assert_eq!((report.acked, report.unknown), (3, 1));
        // But an unknown publish that was stored may be delivered: that is no phantom.
        history.deliveries.push(delivery("live", "m3", None));
        assert!(history.check(&["live"]).is_ok());
    }

    #[test]
    fn a_lower_new_offset_is_disorder() {
        let mut history = clean();
        // replay got offset 2 before offset 1.
        history.deliveries.swap(3, 5);
        let report = history.check(&["live", "replay"]);
        assert_eq!(report.out_of_order.len(), 1, "{report}");
        let (reader, position, seen) = &report.out_of_order[0];
        assert_eq!((reader.as_str(), position.offset, *seen), ("replay", 1, 2));
        assert!(report.to_string().contains("replay got default/0 offset 1 after offset 2"), "{report}");
    }

    #[test]
    fn offsets_are_ordered_per_partition_and_redelivery_is_no_disorder() {
        let mut history = clean();
        // Another partition starting at 0 after partition 0 reached 2: fine.
        history.publishes.push(publish("p1", 1, Outcome::Acked(0)));
        history.deliveries.push(delivery("replay", "p1", at(1, 0)));
        // A QoS 1 redelivery of offset 1 after offset 2: a duplicate, not disorder.
        history.deliveries.push(delivery("replay", "m1", at(0, 1)));
        let report = history.check(&["replay"]);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.qos1_duplicates, vec![("replay".to_string(), "m1".to_string(), 2)]);
        assert!(report.to_string().contains("QoS 1 duplicates (allowed) (1)"), "{report}");
    }

    #[test]
    fn two_payloads_at_one_offset_conflict_even_across_readers() {
        let mut history = clean();
        history.publishes.push(publish("other", 1, Outcome::Acked(0)));
        history.deliveries.push(delivery("second-replay", "other", at(0, 1)));
        let report = history.check(&[]);
        assert_eq!(report.conflicts.len(), 1, "{report}");
        assert_eq!(report.conflicts[0].1, vec!["m1".to_string(), "other".to_string()]);
        assert!(report.to_string().contains("default/0 offset 1: [\"m1\", \"other\"]"), "{report}");
    }

    #[test]
    fn qos0_and_qos2_duplicates_are_violations_qos1_ones_are_not() {
        let mut history = clean();
        history.publishes.push(publish("q0", 0, Outcome::Unknown));
        history.publishes.push(publish("q2", 2, Outcome::Acked(0)));
        for _ in 0..2 {
            history.deliveries.push(delivery("live", "q0", None));
            history.deliveries.push(delivery("live", "q2", None));
            history.deliveries.push(delivery("live", "m0", None));
        }
        let report = history.check(&["live"]);
        let forbidden: Vec<(&str, u8, usize)> =
            report.forbidden_duplicates.iter().map(|(_, p, n, q)| (p.as_str(), *q, *n)).collect();
        assert_eq!(forbidden, vec![("q0", 0, 2), ("q2", 2, 2)], "{report}");
        assert_eq!(report.qos1_duplicates, vec![("live".to_string(), "m0".to_string(), 3)]);
        assert!(!report.is_ok());
        assert!(report.to_string().contains("\"q2\" (QoS 2) reached live 2 times"), "{report}");
    }

    #[test]
    fn a_payload_nobody_published_is_a_phantom() {
        let mut history = clean();
        history.deliveries.push(delivery("live", "ghost", None));
        let report = history.check(&["live"]);
        assert_eq!(report.phantoms, vec![("live".to_string(), "ghost".to_string())]);
        assert!(!report.is_ok());
    }

    #[test]
    #[should_panic(expected = "\"m2\" never reached live")]
    fn assert_ok_names_what_was_lost() {
        let mut history = clean();
        history.deliveries.retain(|d| d.payload != "m2");
        history.check(&["live"]).assert_ok();
    }

    #[test]
    fn the_recorder_tracks_outcomes_and_progress() {
        let recorder = Recorder::new();
        recorder.sent("pub", "t", "a", 1);
        recorder.sent("pub", "t", "b", 1);
        recorder.acked("pub", "a", 0);
        recorder.acked("pub", "b", 0x80);
        assert_eq!(recorder.acked_payloads(), HashSet::from(["a".to_string()]));
        assert!(!recorder.has_every_acked("sub"));
        recorder.delivered("sub", "t", "a", at(0, 0));
        recorder.delivered("sub", "t", "a", at(0, 0));
        assert!(recorder.has_every_acked("sub"));
        assert_eq!(recorder.received_by("sub"), 1);
        let history = recorder.snapshot();
        assert_eq!(history.publishes[1].outcome, Outcome::Acked(0x80));
        history.check(&["sub"]).assert_ok();
    }
}
