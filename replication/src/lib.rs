//! `strata-replication` will own replication: one openraft group per partition (replication
//! factor R) plus one metadata group holding nodes, stream definitions and partition
//! assignments, with Raft entries stored as record batches in the partition's own log, and the
//! tonic network between nodes. Nothing is implemented yet; this crate only fixes the
//! workspace layout, and exports nothing.
