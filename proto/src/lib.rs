//! `strata-proto`: the `.proto` files of Strata's gRPC APIs and the tonic/prost code built
//! from them at compile time (`build.rs`, with protox: no system `protoc` is needed).
//!
//! - [`admin::v1`]: the admin API (`strata/admin/v1/admin.proto`), served by
//!   `strata serve --grpc ADDR` and called by `strata stream ...` and `strata group ...`.
//! - [`cluster::v1`]: Raft between the nodes of a cluster (`strata/cluster/v1/raft.proto`),
//!   used by `strata-replication`.

/// The admin API.
pub mod admin {
    /// Version 1 of the admin API (`package strata.admin.v1`).
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("strata.admin.v1");
    }
}

/// The API between the nodes of a cluster.
pub mod cluster {
    /// Version 1 (`package strata.cluster.v1`): Raft RPCs, each naming its group, and
    /// forwarding of proposals and status requests to a group's leader (`forward.proto`).
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("strata.cluster.v1");
    }
}
