//! `strata cluster status` and `GET /cluster/status` (issue 20): the cluster's nodes and every
//! partition's replication, as the contract's JSON and as a table for people. The CLI gets a
//! [`pb::ClusterStatusResponse`] and the HTTP endpoint a [`ClusterStatus`]; the CLI turns the
//! message back into the struct, so both print through [`to_json`] and cannot drift apart.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use strata_frontend::cluster_status::{ClusterStatus, NodeStatus, PartitionStatus};
use strata_proto::admin::v1 as pb;

/// `status` as the admin API's message.
pub fn to_proto(status: &ClusterStatus) -> pb::ClusterStatusResponse {
    pb::ClusterStatusResponse {
        node_id: status.node_id,
        nodes: status.nodes.iter().map(|n| pb::ClusterNode { node_id: n.node_id, addr: n.addr.clone() }).collect(),
        partitions: status
            .partitions
            .iter()
            .map(|p| pb::ClusterPartition {
                stream: p.stream.clone(),
                partition: p.partition,
                leader: p.leader,
                replicas: p.replicas.clone(),
                in_sync: p.in_sync.clone(),
                log_end: p.log_end.iter().map(|(node, end)| (*node, *end)).collect(),
                committed: p.committed,
            })
            .collect(),
    }
}

/// The admin API's message as the status it carries.
pub fn from_proto(response: pb::ClusterStatusResponse) -> ClusterStatus {
    ClusterStatus {
        node_id: response.node_id,
        nodes: response.nodes.into_iter().map(|n| NodeStatus { node_id: n.node_id, addr: n.addr }).collect(),
        partitions: response
            .partitions
            .into_iter()
            .map(|p| PartitionStatus {
                stream: p.stream,
                partition: p.partition,
                leader: p.leader,
                replicas: p.replicas,
                in_sync: p.in_sync,
                log_end: p.log_end.into_iter().collect::<BTreeMap<u64, u64>>(),
                committed: p.committed,
            })
            .collect(),
    }
}

/// The contract's JSON: `node_id`, `nodes` (`node_id`, `addr`) and `partitions` (`stream`,
/// `partition`, `leader` (null while there is none), `replicas`, `in_sync`, `log_end` (an
/// object keyed by node id as a string, since JSON keys are strings) and `committed`).
pub fn to_json(status: &ClusterStatus) -> Value {
    let nodes: Vec<Value> = status.nodes.iter().map(|n| json!({"node_id": n.node_id, "addr": n.addr})).collect();
    let partitions: Vec<Value> = status
        .partitions
        .iter()
        .map(|p| {
            let log_end: Map<String, Value> =
                p.log_end.iter().map(|(node, end)| (node.to_string(), json!(end))).collect();
            json!({"stream": p.stream, "partition": p.partition, "leader": p.leader, "replicas": p.replicas,
                   "in_sync": p.in_sync, "log_end": log_end, "committed": p.committed})
        })
        .collect();
    json!({"node_id": status.node_id, "nodes": nodes, "partitions": partitions})
}

/// `status` for people: the nodes (this one marked), then one row per partition, with the
/// log ends as `node:end` pairs (`1:10 2:10 3:9`).
pub fn to_table(status: &ClusterStatus) -> String {
    let nodes = status
        .nodes
        .iter()
        .map(|n| {
            let this = if n.node_id == status.node_id { "yes" } else { "" };
            vec![n.node_id.to_string(), n.addr.clone(), this.to_owned()]
        })
        .collect();
    let ids = |ids: &[u64]| {
        if ids.is_empty() { "-".to_owned() } else { ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",") }
    };
    let partitions = status
        .partitions
        .iter()
        .map(|p| {
            let log_end: Vec<String> = p.log_end.iter().map(|(node, end)| format!("{node}:{end}")).collect();
            vec![
                p.stream.clone(),
                p.partition.to_string(),
                p.leader.map_or_else(|| "none".to_owned(), |leader| leader.to_string()),
                ids(&p.replicas),
                ids(&p.in_sync),
                if log_end.is_empty() { "-".to_owned() } else { log_end.join(" ") },
                p.committed.to_string(),
            ]
        })
        .collect();
    let mut text = super::admin_client::table(&["NODE", "ADDRESS", "THIS NODE"], nodes);
    text.push('\n');
    text.push_str(&super::admin_client::table(
        &["STREAM", "PARTITION", "LEADER", "REPLICAS", "IN SYNC", "LOG END", "COMMITTED"],
        partitions,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three nodes; a partition with a leader and one whose leader is gone.
    fn three_nodes() -> ClusterStatus {
        let node = |id: u64| NodeStatus { node_id: id, addr: format!("127.0.0.1:710{id}") };
        ClusterStatus {
            node_id: 2,
            nodes: vec![node(1), node(2), node(3)],
            partitions: vec![
                PartitionStatus {
                    stream: "s".into(),
                    partition: 0,
                    leader: Some(1),
                    replicas: vec![1, 2, 3],
                    in_sync: vec![1, 2, 3],
                    log_end: BTreeMap::from([(1, 10), (2, 10), (3, 9)]),
                    committed: 10,
                },
                PartitionStatus {
                    stream: "s".into(),
                    partition: 1,
                    leader: None,
                    replicas: vec![2, 3],
                    in_sync: vec![],
                    log_end: BTreeMap::from([(2, 4)]),
                    committed: 3,
                },
            ],
        }
    }

    #[test]
    fn json_has_exactly_the_contract_keys_and_values() {
        let expected = json!({
            "node_id": 2,
            "nodes": [
                {"node_id": 1, "addr": "127.0.0.1:7101"},
                {"node_id": 2, "addr": "127.0.0.1:7102"},
                {"node_id": 3, "addr": "127.0.0.1:7103"},
            ],
            "partitions": [
                {"stream": "s", "partition": 0, "leader": 1, "replicas": [1, 2, 3], "in_sync": [1, 2, 3],
                 "log_end": {"1": 10, "2": 10, "3": 9}, "committed": 10},
                {"stream": "s", "partition": 1, "leader": null, "replicas": [2, 3], "in_sync": [],
                 "log_end": {"2": 4}, "committed": 3},
            ],
        });
        let actual = to_json(&three_nodes());
        assert_eq!(actual, expected);
        // `leader` is present as null, not left out, when there is no leader.
        assert!(actual["partitions"][1].as_object().unwrap().get("leader").is_some_and(Value::is_null));
        let keys: Vec<&str> = actual["partitions"][0].as_object().unwrap().keys().map(String::as_str).collect();
        let mut contract = ["stream", "partition", "leader", "replicas", "in_sync", "log_end", "committed"];
        contract.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, contract);
    }

    #[test]
    fn the_admin_message_carries_the_status_unchanged() {
        let status = three_nodes();
        let message = to_proto(&status);
        assert_eq!(message.partitions[1].leader, None);
        assert_eq!(message.partitions[0].log_end.get(&3), Some(&9));
        assert_eq!(from_proto(message), status);
    }

    #[test]
    fn table_shows_one_row_per_partition_with_log_ends_by_node() {
        let table = to_table(&three_nodes());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "NODE  ADDRESS         THIS NODE",
                "1     127.0.0.1:7101",
                "2     127.0.0.1:7102  yes",
                "3     127.0.0.1:7103",
                "",
                "STREAM  PARTITION  LEADER  REPLICAS  IN SYNC  LOG END        COMMITTED",
                "s       0          1       1,2,3     1,2,3    1:10 2:10 3:9  10",
                "s       1          none    2,3       -        2:4            3",
            ]
        );
    }
}
