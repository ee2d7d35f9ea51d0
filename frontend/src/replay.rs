//! `$stream/<stream>[/<filter>]`: replay of a stream from an offset, then live. Parses the
//! start (the SUBSCRIBE user properties `stream-offset` and `stream-partition`, or the topic
//! form `$stream/<stream>/@[p<n>:]<offset-spec>[/<filter>]` for MQTT 3.1.1 clients) and
//! resolves it against the stream's partitions. A start that cannot be served (unknown
//! stream, partition out of range, offset below the log start or past the end) is refused
//! with a reason; it never silently jumps.

use std::sync::Arc;

use crate::codec::{ByteString, QoS, ReasonCode, SubscriptionOptions};
use crate::partition::PartitionHandle;
use crate::session::Route;
use crate::streams::Streams;

/// SUBSCRIBE user property choosing where a replay starts.
pub const STREAM_OFFSET: &str = "stream-offset";
/// SUBSCRIBE user property choosing one partition; also set on each delivered PUBLISH.
pub const STREAM_PARTITION: &str = "stream-partition";
/// User property on each delivered PUBLISH: the record's timestamp (unix ms).
pub const STREAM_TIMESTAMP: &str = "stream-timestamp";
/// User property on each delivered PUBLISH: the record's key, where the stream has one.
pub const STREAM_KEY: &str = "stream-key";

/// Where a replay starts in each partition it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start.
    Earliest,
    /// The high watermark: only what is appended from now on.
    Latest,
    /// This offset, in every partition read.
    At(u64),
    /// The first record at or after this time (unix ms); the high watermark if none.
    Timestamp(i64),
}

/// A `$stream` subscription as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    /// The stream's name.
    pub stream: String,
    /// The topics of the stream to deliver.
    pub filter: String,
    /// Where to start.
    pub offset: OffsetSpec,
    /// One partition, or all when `None`.
    pub partition: Option<u32>,
}

/// Parses `earliest`, `latest`, `<offset>` or `timestamp:<unix-ms>`.
pub fn parse_offset_spec(spec: &str) -> Result<OffsetSpec, String> {
    match spec {
        "earliest" => Ok(OffsetSpec::Earliest),
        "latest" => Ok(OffsetSpec::Latest),
        _ => {
            if let Some(ms) = spec.strip_prefix("timestamp:") {
                return ms.parse().map(OffsetSpec::Timestamp).map_err(|_| {
                    format!(
                        "{STREAM_OFFSET} {spec:?}: timestamp must be unix milliseconds, e.g. timestamp:1700000000000"
                    )
                });
            }
            spec.parse().map(OffsetSpec::At).map_err(|_| {
                format!("{STREAM_OFFSET} {spec:?}: must be earliest, latest, an offset or timestamp:<unix-ms>")
            })
        }
    }
}

fn parse_partition(text: &str) -> Result<u32, String> {
    text.parse().map_err(|_| format!("{STREAM_PARTITION} {text:?}: must be a partition number"))
}

/// Builds the request of `$stream/<stream>/<inner>` (`inner` is `#` when absent). The topic
/// form's first level `@[p<n>:]<spec>` wins over the user properties.
pub fn parse_request(
    stream: &str,
    inner: &str,
    user_properties: &[(ByteString, ByteString)],
) -> Result<ReplayRequest, String> {
    let property = |name: &str| user_properties.iter().rev().find(|(n, _)| &n[..] == name).map(|(_, v)| &v[..]);
    let (offset, partition, filter) = match inner.strip_prefix('@') {
        Some(form) => {
            let (level, rest) = form.split_once('/').unwrap_or((form, "#"));
            let (partition, spec) = match level.strip_prefix('p').and_then(|p| p.split_once(':')) {
                Some((n, spec)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    (Some(parse_partition(n)?), spec)
                }
                _ => (None, level),
            };
            (parse_offset_spec(spec)?, partition, rest)
        }
        None => {
            let offset = property(STREAM_OFFSET).map_or(Ok(OffsetSpec::Latest), parse_offset_spec)?;
            let partition = property(STREAM_PARTITION).map(parse_partition).transpose()?;
            (offset, partition, inner)
        }
    };
    if filter.is_empty() {
        return Err(format!("$stream/{stream}: empty topic filter"));
    }
    Ok(ReplayRequest { stream: stream.to_owned(), filter: filter.to_owned(), offset, partition })
}

/// A live `$stream` subscription of a connection.
#[derive(Debug)]
pub(crate) struct ReplaySubscription {
    /// The filter exactly as subscribed (`$stream/...`), for UNSUBSCRIBE.
    pub(crate) subscribed_as: String,
    pub(crate) stream: String,
    pub(crate) filter: String,
    pub(crate) options: SubscriptionOptions,
    pub(crate) identifier: Option<u32>,
    /// The stream's compaction key, for `stream-key`.
    pub(crate) compaction_key: Option<String>,
}

impl ReplaySubscription {
    /// How a message reaches the subscriber, or `None` if the filter does not want it.
    pub(crate) fn route(&self, topic: &str, qos: QoS, retain: bool, from_self: bool) -> Option<Route> {
        if (from_self && self.options.no_local) || !crate::topic::matches(&self.filter, topic) {
            return None;
        }
        Some(Route {
            qos: self.options.qos.min(qos),
            retain: retain && self.options.retain_as_published,
            identifiers: self.identifier.into_iter().collect(),
        })
    }
}

/// A refused `$stream` subscription: its SUBACK reason code and reason string.
pub(crate) type Refusal = (ReasonCode, String);

/// The partitions `request` reads and the offset each starts at. `latest` is a partition's
/// offset in `latest` (partition id, offset: its end when the SUBSCRIBE was decoded), else
/// its end now.
pub(crate) fn resolve(
    streams: &Streams,
    request: &ReplayRequest,
    latest: &[(u32, u64)],
) -> Result<Vec<(Arc<PartitionHandle>, u64)>, Refusal> {
    let Some(stream) = streams.get(&request.stream) else {
        let known: Vec<String> = streams.all().iter().map(|s| s.name.clone()).collect();
        let why = format!("unknown stream {:?}; streams: {}", request.stream, known.join(", "));
        return Err((ReasonCode::TopicFilterInvalid, why));
    };
    let partitions: Vec<&Arc<PartitionHandle>> = match request.partition {
        None => stream.partitions.iter().collect(),
        Some(n) => match stream.partitions.get(n as usize) {
            Some(partition) => vec![partition],
            None => {
                let why = format!(
                    "stream {:?} has partitions 0 to {}; there is no partition {n}",
                    stream.name,
                    stream.partitions.len() - 1
                );
                return Err((ReasonCode::ImplementationSpecificError, why));
            }
        },
    };
    let mut starts = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let offsets = partition.offsets();
        let end = latest
            .iter()
            .find(|(id, _)| *id == partition.id)
            .map_or(offsets.high_watermark, |&(_, end)| end.clamp(offsets.log_start, offsets.high_watermark));
        let start = match request.offset {
            OffsetSpec::Earliest => offsets.log_start,
            OffsetSpec::Latest => end,
            OffsetSpec::At(offset) if offset < offsets.log_start => {
                let why = format!(
                    "offset {offset} is below the log start {} of stream {:?} partition {}",
                    offsets.log_start, stream.name, partition.number
                );
                return Err((ReasonCode::ImplementationSpecificError, why));
            }
            OffsetSpec::At(offset) if offset > offsets.high_watermark => {
                let why = format!(
                    "offset {offset} is past the end {} of stream {:?} partition {}",
                    offsets.high_watermark, stream.name, partition.number
                );
                return Err((ReasonCode::ImplementationSpecificError, why));
            }
            OffsetSpec::At(offset) => offset,
            OffsetSpec::Timestamp(ms) => match partition.offset_for_timestamp(ms) {
                Ok(found) => found.unwrap_or(end).max(offsets.log_start),
                Err(error) => return Err((ReasonCode::UnspecifiedError, format!("reading the time index: {error}"))),
            },
        };
        starts.push((Arc::clone(partition), start));
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(ByteString, ByteString)> {
        pairs.iter().map(|(n, v)| (ByteString::from(*n), ByteString::from(*v))).collect()
    }

    #[test]
    fn offset_specs_parse() {
        assert_eq!(parse_offset_spec("earliest"), Ok(OffsetSpec::Earliest));
        assert_eq!(parse_offset_spec("latest"), Ok(OffsetSpec::Latest));
        assert_eq!(parse_offset_spec("42"), Ok(OffsetSpec::At(42)));
        assert_eq!(parse_offset_spec("timestamp:1700000000000"), Ok(OffsetSpec::Timestamp(1_700_000_000_000)));
        for bad in ["", "-1", "first", "timestamp:", "timestamp:x"] {
            assert!(parse_offset_spec(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn properties_choose_the_start_and_default_to_latest() {
        let request = parse_request("orders", "#", &[]).unwrap();
        assert_eq!((request.offset, request.partition, request.filter.as_str()), (OffsetSpec::Latest, None, "#"));
        let request =
            parse_request("orders", "eu/+", &props(&[("stream-offset", "7"), ("stream-partition", "2")])).unwrap();
        assert_eq!((request.offset, request.partition, request.filter.as_str()), (OffsetSpec::At(7), Some(2), "eu/+"));
        assert!(parse_request("orders", "#", &props(&[("stream-partition", "x")])).is_err());
    }

    #[test]
    fn the_topic_form_carries_the_start() {
        let request = parse_request("orders", "@earliest", &[]).unwrap();
        assert_eq!((request.offset, request.partition, request.filter.as_str()), (OffsetSpec::Earliest, None, "#"));
        let request = parse_request("orders", "@p3:timestamp:5/eu/#", &props(&[("stream-offset", "1")])).unwrap();
        assert_eq!(
            (request.offset, request.partition, request.filter.as_str()),
            (OffsetSpec::Timestamp(5), Some(3), "eu/#")
        );
        assert_eq!(parse_request("orders", "@12", &[]).unwrap().offset, OffsetSpec::At(12));
        assert!(parse_request("orders", "@p1:soon", &[]).is_err());
        assert!(parse_request("orders", "@", &[]).is_err());
    }
}
