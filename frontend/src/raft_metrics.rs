//! The `strata_raft_*` metrics (issue 20), rendered from the replication crate's figures of
//! every Raft group open on this node, in the Prometheus text format. Every series is
//! labelled with the group's `stream` and `partition`; follower lag also with `follower`.

use std::fmt::Write as _;

use strata_replication::GroupFigures;

/// One metric family: its help, type and one line per group.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: fn(&GroupFigures) -> f64,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "strata_raft_elections_total",
        help: "Terms this node saw begin for the group (every election, won or not), since it opened here.",
        kind: "counter",
        value: |f| f.elections as f64,
    },
    Family {
        name: "strata_raft_leader_changes_total",
        help: "Times the group's known leader became another node, since it opened here.",
        kind: "counter",
        value: |f| f.leader_changes as f64,
    },
    Family {
        name: "strata_raft_term",
        help: "The group's current Raft term.",
        kind: "gauge",
        value: |f| f.term as f64,
    },
    Family {
        name: "strata_raft_leader_available",
        help: "1 while this node knows a leader of the group, else 0 (publishes wait or fail).",
        kind: "gauge",
        value: |f| if f.leader.is_some() { 1.0 } else { 0.0 },
    },
    Family {
        name: "strata_raft_is_leader",
        help: "1 on the node that leads the group.",
        kind: "gauge",
        value: |f| if f.is_leader { 1.0 } else { 0.0 },
    },
    Family { name: "strata_raft_replicas", help: "Voters of the group.", kind: "gauge", value: |f| f.replicas as f64 },
    Family {
        name: "strata_raft_in_sync_replicas",
        help: "Replicas in sync with the leader, the leader included (reported by the leader; 0 on followers).",
        kind: "gauge",
        value: |f| f.in_sync as f64,
    },
    Family {
        name: "strata_raft_forwarded_in_total",
        help: "Records this node committed as leader for publishes other nodes forwarded.",
        kind: "counter",
        value: |f| f.forwarded_in as f64,
    },
    Family {
        name: "strata_raft_forwarded_out_total",
        help: "Records this node forwarded to the group's leader elsewhere and saw committed.",
        kind: "counter",
        value: |f| f.forwarded_out as f64,
    },
];

/// Escapes a label value (backslash, quote and newline).
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders `figures` as the `strata_raft_*` families. Empty for a node without groups.
pub(crate) fn render(figures: &[GroupFigures]) -> String {
    let mut out = String::new();
    if figures.is_empty() {
        return out;
    }
    let labels =
        |f: &GroupFigures| format!("stream=\"{}\",partition=\"{}\"", label(&f.group.stream), f.group.partition);
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for f in figures {
            let _ = writeln!(out, "{}{{{}}} {}", family.name, labels(f), (family.value)(f));
        }
    }
    for (name, help, pick) in [
        (
            "strata_raft_follower_lag_entries",
            "On the leader: entries a follower lacks of the leader's log.",
            (|lag: &(u64, u64, u64)| lag.1) as fn(&(u64, u64, u64)) -> u64,
        ),
        (
            "strata_raft_follower_lag_ms",
            "On the leader: milliseconds since a follower last had the leader's whole log (0 when it has it).",
            |lag: &(u64, u64, u64)| lag.2,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for f in figures {
            for lag in &f.follower_lag {
                let _ = writeln!(out, "{name}{{{},follower=\"{}\"}} {}", labels(f), lag.0, pick(lag));
            }
        }
    }
    let name = "strata_raft_commit_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Proposal-to-commit time of the publishes this node led (local or forwarded in); a record is visible to readers once committed."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for f in figures {
        let histogram = &f.commit_latency;
        for (bound_ms, count) in &histogram.buckets {
            let le = if bound_ms.is_infinite() { "+Inf".to_owned() } else { format!("{}", bound_ms / 1000.0) };
            let _ = writeln!(out, "{name}_bucket{{{},le=\"{le}\"}} {count}", labels(f));
        }
        let _ = writeln!(out, "{name}_sum{{{}}} {}", labels(f), histogram.sum_ms / 1000.0);
        let _ = writeln!(out, "{name}_count{{{}}} {}", labels(f), histogram.count);
    }
    out
}

#[cfg(test)]
mod tests {
    use strata_replication::{GroupId, LatencyHistogram};

    use super::*;

    #[test]
    fn every_family_has_a_line_per_group_and_lag_per_follower() {
        let figures = GroupFigures {
            group: GroupId::new("orders", 2),
            is_leader: true,
            leader: Some(1),
            term: 4,
            leader_changes: 2,
            elections: 3,
            in_sync: 2,
            replicas: 3,
            follower_lag: vec![(2, 0, 0), (3, 17, 250)],
            forwarded_in: 9,
            forwarded_out: 0,
            commit_latency: LatencyHistogram { count: 5, sum_ms: 10.0, buckets: vec![(1.0, 2), (f64::INFINITY, 5)] },
        };
        let text = render(&[figures]);
        for line in [
            "strata_raft_elections_total{stream=\"orders\",partition=\"2\"} 3",
            "strata_raft_leader_changes_total{stream=\"orders\",partition=\"2\"} 2",
            "strata_raft_leader_available{stream=\"orders\",partition=\"2\"} 1",
            "strata_raft_in_sync_replicas{stream=\"orders\",partition=\"2\"} 2",
            "strata_raft_forwarded_in_total{stream=\"orders\",partition=\"2\"} 9",
            "strata_raft_follower_lag_entries{stream=\"orders\",partition=\"2\",follower=\"3\"} 17",
            "strata_raft_follower_lag_ms{stream=\"orders\",partition=\"2\",follower=\"3\"} 250",
            "strata_raft_commit_latency_seconds_bucket{stream=\"orders\",partition=\"2\",le=\"0.001\"} 2",
            "strata_raft_commit_latency_seconds_bucket{stream=\"orders\",partition=\"2\",le=\"+Inf\"} 5",
            "strata_raft_commit_latency_seconds_sum{stream=\"orders\",partition=\"2\"} 0.01",
            "strata_raft_commit_latency_seconds_count{stream=\"orders\",partition=\"2\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(render(&[]).is_empty());
    }
}
