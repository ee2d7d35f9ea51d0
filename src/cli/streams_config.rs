//! `[log]` (defaults for every stream) and `[[streams]]` of the config file, read key by key
//! so that an unknown key or a bad value is named exactly: `streams[1].segment_bytes`.
//! `docs/config.md` documents every key, its unit, default and range.

use strata_frontend::StreamConfig;
use strata_frontend::stream_settings::{self, PER_STREAM_KEYS, SETTING_KEYS};
use strata_frontend::streams::valid_stream_name;
use toml::{Table, Value};

/// Keys of the log settings, accepted in `[log]` and in each `[[streams]]` entry: the same
/// settings the admin API takes (`stream_settings`) but the per-stream ones
/// (`PER_STREAM_KEYS`, last among them; a test checks).
pub const LOG_KEYS: &[&str] = match SETTING_KEYS.split_last() {
    Some((_, defaults)) => defaults,
    None => SETTING_KEYS,
};
/// Keys only a `[[streams]]` entry has.
pub const STREAM_KEYS: &[&str] = &["name", "topics", "partitions", "replica_assignment"];

/// The settings `[log]` gives every stream, and the streams (the `[log]` values under each
/// stream's own; `default` last unless configured).
#[derive(Debug, Clone, PartialEq)]
pub struct Streams {
    /// `[log]` over the built-in defaults, as a stream without name: what a stream created at
    /// runtime starts from.
    pub log_defaults: StreamConfig,
    /// Every stream, in the file's order.
    pub streams: Vec<StreamConfig>,
}

/// Reads `[log]` and every `[[streams]]` entry into stream configs (the `[log]` values under
/// each stream's own). Errors name the key.
pub fn parse_streams(log: Option<&Table>, streams: &[Table]) -> anyhow::Result<Streams> {
    let mut defaults = StreamConfig::new("");
    if let Some(log) = log {
        apply_log_settings(&mut defaults, log, "log")?;
    }
    let mut out: Vec<StreamConfig> = Vec::with_capacity(streams.len());
    for (i, table) in streams.iter().enumerate() {
        let at = format!("streams[{i}]");
        for key in table.keys() {
            if !SETTING_KEYS.contains(&key.as_str()) && !STREAM_KEYS.contains(&key.as_str()) {
                anyhow::bail!(
                    "{at}.{key}: unknown key; a stream has {}, {}",
                    STREAM_KEYS.join(", "),
                    LOG_KEYS.join(", ")
                );
            }
        }
        let name = match table.get("name") {
            Some(Value::String(name)) => name.clone(),
            Some(other) => anyhow::bail!("{at}.name = {other}: must be a string"),
            None => anyhow::bail!("{at}.name: missing; every [[streams]] entry needs a name"),
        };
        if !valid_stream_name(&name) {
            anyhow::bail!(
                "{at}.name = {name:?}: must be 1-255 bytes without '/', '+', '#', '\\', not starting with '$', not . or .."
            );
        }
        if out.iter().any(|s| s.name == name) {
            anyhow::bail!("{at}.name = {name:?}: a stream of that name is already defined");
        }
        let mut stream = defaults.clone();
        stream.name = name;
        if let Some(value) = table.get("topics") {
            let Value::Array(items) = value else { anyhow::bail!("{at}.topics: must be an array of topic filters") };
            for (j, item) in items.iter().enumerate() {
                let Value::String(filter) = item else { anyhow::bail!("{at}.topics[{j}]: must be a string") };
                stream.topics.push(filter.clone());
            }
            stream_settings::validate_topics(&stream.topics).map_err(|e| anyhow::anyhow!("{at}.{e}"))?;
        }
        if let Some(value) = table.get("partitions") {
            let n = match value {
                Value::Integer(n) if *n >= 0 => *n as u64,
                other => anyhow::bail!("{at}.partitions = {other}: must be a non-negative integer"),
            };
            stream.partitions = stream_settings::validate_partitions(n).map_err(|e| anyhow::anyhow!("{at}.{e}"))?;
        }
        apply_log_settings(&mut stream, table, &at)?;
        out.push(stream);
    }
    // `default` always exists, with the `[log]` settings unless configured.
    if !out.iter().any(|s| s.name == strata_frontend::DEFAULT_STREAM) {
        let mut default = defaults.clone();
        default.name = strata_frontend::DEFAULT_STREAM.to_owned();
        out.push(default);
    }
    Ok(Streams { log_defaults: defaults, streams: out })
}

/// Applies the log-setting keys of `table` (at `at`, e.g. `log` or `streams[2]`) to `stream`
/// through the parser the admin API uses too (`stream_settings`), so both accept the same.
fn apply_log_settings(stream: &mut StreamConfig, table: &Table, at: &str) -> anyhow::Result<()> {
    let mut settings = Vec::with_capacity(table.len());
    for (key, value) in table {
        if at == "log" && PER_STREAM_KEYS.contains(&key.as_str()) {
            anyhow::bail!("{at}.{key}: a setting of one stream (a replica list per partition); set it in [[streams]]");
        }
        if STREAM_KEYS.contains(&key.as_str()) && !SETTING_KEYS.contains(&key.as_str()) && at != "log" {
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Integer(n) => n.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Array(lists) if key == "replica_assignment" => assignment(lists)
                .ok_or_else(|| anyhow::anyhow!("{at}.{key}: must be \"1,2,3;2,3,1\" or [[1, 2, 3], [2, 3, 1]]"))?,
            other => anyhow::bail!("{at}.{key} = {other}: must be a number or a string"),
        };
        settings.push((key.clone(), text));
    }
    stream_settings::apply_settings(stream, &settings).map_err(|error| {
        if SETTING_KEYS.contains(&error.key.as_str()) || error.key.starts_with("topics") {
            anyhow::anyhow!("{at}.{error}")
        } else if at == "log" {
            anyhow::anyhow!("{at}.{}: unknown key; [log] has {}", error.key, SETTING_KEYS.join(", "))
        } else {
            anyhow::anyhow!("{at}.{error}")
        }
    })
}

/// `replica_assignment` written as a TOML array of arrays of node ids, in its text form
/// (`stream_settings` checks the ids); None if it is not arrays of integers.
fn assignment(lists: &[Value]) -> Option<String> {
    let lists: Option<Vec<String>> = lists
        .iter()
        .map(|list| {
            let Value::Array(ids) = list else { return None };
            let ids: Option<Vec<String>> =
                ids.iter().map(|id| if let Value::Integer(id) = id { Some(id.to_string()) } else { None }).collect();
            ids.map(|ids| ids.join(","))
        })
        .collect();
    lists.map(|lists| lists.join(";"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_compaction::CleanupPolicy;
    use strata_log::FlushPolicy;

    fn parse(text: &str) -> anyhow::Result<Vec<StreamConfig>> {
        parse_with_defaults(text).map(|parsed| parsed.streams)
    }

    fn parse_with_defaults(text: &str) -> anyhow::Result<Streams> {
        #[derive(serde::Deserialize)]
        struct File {
            log: Option<Table>,
            #[serde(default)]
            streams: Vec<Table>,
        }
        let file: File = toml::from_str(text)?;
        parse_streams(file.log.as_ref(), &file.streams)
    }

    #[test]
    fn streams_take_the_log_defaults_and_default_always_exists() {
        let streams = parse(
            "[log]\nsegment_bytes = 4096\nretention_ms = 60000\n\n[[streams]]\nname = \"orders\"\ntopics = [\"orders/#\"]\npartitions = 3\ncompaction_key = \"order_id\"\ncleanup_policy = \"compact\"\nflush = \"always\"\n",
        )
        .unwrap();
        assert_eq!(streams.len(), 2);
        let orders = &streams[0];
        assert_eq!((orders.name.as_str(), orders.partitions, orders.log.segment_bytes), ("orders", 3, 4096));
        assert_eq!(orders.topics, vec!["orders/#".to_owned()]);
        assert_eq!(orders.cleanup_policy, CleanupPolicy::Compact);
        assert_eq!(orders.log.flush, FlushPolicy::Always);
        assert_eq!(orders.retention.retention_ms, Some(60_000));
        assert_eq!(streams[1].name, "default");
        assert_eq!(streams[1].log.segment_bytes, 4096);
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let cases = [
            ("[[streams]]\nname = \"a\"\n[[streams]]\nname = \"b\"\nsegment_bytes = 10\n", "streams[1].segment_bytes"),
            ("[[streams]]\nname = \"a\"\nsegment_byte = 4096\n", "streams[0].segment_byte"),
            ("[[streams]]\nname = \"a\"\npartitions = 0\n", "streams[0].partitions"),
            ("[[streams]]\nname = \"a/b\"\n", "streams[0].name"),
            ("[[streams]]\ntopics = [\"x\"]\n", "streams[0].name"),
            ("[[streams]]\nname = \"a\"\ntopics = [\"a/#/b\"]\n", "streams[0].topics[0]"),
            ("[[streams]]\nname = \"a\"\nflush = \"sometimes\"\n", "streams[0].flush"),
            ("[[streams]]\nname = \"a\"\ncompression = \"lz4\"\n", "streams[0].compression"),
            ("[[streams]]\nname = \"a\"\ncleanup_policy = \"keep\"\n", "streams[0].cleanup_policy"),
            ("[[streams]]\nname = \"a\"\nmin_cleanable_dirty_ratio = 2.0\n", "streams[0].min_cleanable_dirty_ratio"),
            ("[[streams]]\nname = \"a\"\n[[streams]]\nname = \"a\"\n", "streams[1].name"),
            ("[log]\nretention_ms = -1\n", "log.retention_ms"),
            ("[log]\npartitions = 2\n", "log.partitions"),
            ("[log]\nflush = \"never\"\nflush_interval_ms = 5\n", "log.flush_interval_ms"),
            ("[log]\nreplica_assignment = \"1\"\n", "log.replica_assignment"),
            ("[log]\nacks = \"all\"\n", "log.acks"),
            ("[log]\nack_timeout = \"1h\"\n", "log.ack_timeout"),
            ("[[streams]]\nname = \"a\"\nreplication_factor = 8\n", "streams[0].replication_factor"),
            (
                "[[streams]]\nname = \"a\"\nreplication_factor = 2\nmin_insync_replicas = 3\n",
                "streams[0].min_insync_replicas",
            ),
            (
                "[[streams]]\nname = \"a\"\npartitions = 2\nreplica_assignment = \"1,2\"\n",
                "streams[0].replica_assignment",
            ),
            ("[[streams]]\nname = \"a\"\nreplica_assignment = [[1, \"2\"]]\n", "streams[0].replica_assignment"),
            ("[[streams]]\nname = \"a\"\nreplica_assignment = [[1, -2]]\n", "streams[0].replica_assignment"),
        ];
        for (text, key) in cases {
            let error = format!("{:#}", parse(text).unwrap_err());
            assert!(error.contains(key), "{text:?}: {error} should name {key}");
        }
    }

    #[test]
    fn replication_keys_in_log_and_streams() {
        use strata_frontend::streams::Acks;
        let parsed = parse_with_defaults(
            "[log]\nreplication_factor = 3\nacks = \"leader\"\nack_timeout = \"2s\"\n\
             [[streams]]\nname = \"orders\"\npartitions = 2\nmin_insync_replicas = 3\nacks = \"quorum\"\n\
             replica_assignment = [[1, 2, 3], [2, 3, 1]]\n\
             [[streams]]\nname = \"texted\"\npartitions = 2\nreplication_factor = 2\nreplica_assignment = \"4,5;5,4\"\n",
        )
        .unwrap();
        let defaults = &parsed.log_defaults.replication;
        assert_eq!((defaults.factor, defaults.acks), (Some(3), Acks::Leader));
        assert_eq!(defaults.ack_timeout, std::time::Duration::from_secs(2));
        let orders = &parsed.streams[0].replication;
        assert_eq!((orders.factor, orders.acks, orders.min_insync_replicas), (Some(3), Acks::Quorum, Some(3)));
        assert_eq!(orders.ack_timeout, std::time::Duration::from_secs(2));
        assert_eq!(orders.assignment, vec![vec![1, 2, 3], vec![2, 3, 1]]);
        let texted = &parsed.streams[1].replication;
        assert_eq!((texted.factor, texted.assignment.clone()), (Some(2), vec![vec![4, 5], vec![5, 4]]));
        // `default` takes the [log] defaults; no stream has an assignment it did not set.
        assert_eq!(parsed.streams[2].replication, *defaults);
        assert!(defaults.assignment.is_empty());
    }

    #[test]
    fn log_keys_are_the_settings_but_the_per_stream_ones() {
        assert_eq!([LOG_KEYS, PER_STREAM_KEYS].concat(), SETTING_KEYS);
        assert!(PER_STREAM_KEYS.iter().all(|key| STREAM_KEYS.contains(key)));
    }
}
