//! `strata-frontend`: Strata's MQTT side.
//!
//! - [`Broker`]: the MQTT listener over TCP on a single node. Every PUBLISH is appended to a
//!   partition of the stream its topic routes to ([`streams`]); every subscription is a reader
//!   of those partitions, and `$stream/` subscriptions replay a stream from an offset
//!   ([`replay`]; `docs/architecture.md`, "MQTT on the log").
//! - [`codec`]: decoding and encoding every MQTT 3.1, 3.1.1 and 5.0 control packet, with the
//!   specification's validation and reason codes (`docs/architecture.md` says why it is our own).
//! - [`topic`]: topic names and filters: validation, wildcard matching and the `$share/` and
//!   `$stream/` prefixes.
//! - [`record`]: the record layout of an MQTT message in the log; [`session`]: the session's
//!   decisions (routing, packet-id windows) as plain structs; [`session_state`]: what a
//!   persistent session keeps in `$sessions`, and its encoding; [`stream_settings`]: a
//!   stream's settings by name, and its definition as kept in `$streams`.
//! - [`admin`]: what the admin API reads and runs on a live broker ([`Broker::admin`]).
//! - [`tls`]: MQTT and WebSocket over TLS (rustls), and reloading the certificate.
#![deny(missing_docs)]

pub mod acl;
pub mod admin;
mod applied;
pub mod auth;
mod broker;
mod client_registry;
mod cluster;
pub mod cluster_status;
pub mod codec;
mod config;
mod connection;
mod consumers;
mod error;
mod group_registry;
pub mod groups;
mod handoff;
mod interest;
mod limits;
mod listen;
mod metadata;
mod metrics;
mod partition;
mod raft_metrics;
mod readers;
pub mod record;
pub mod replay;
mod retained;
pub mod session;
mod session_core;
pub mod session_state;
mod session_store;
mod shared;
mod shutdown;
mod stream_definitions;
pub mod stream_settings;
pub mod streams;
mod sys_topics;
pub mod tls;
pub mod topic;
mod topic_alias;
pub mod units;
mod watched;
mod websocket;
mod wills;

pub use broker::{Broker, BrokerMetrics};
pub use cluster::ClusterConfig;
pub use config::BrokerConfig;
pub use error::BrokerError;
pub use limits::Limits;
pub use shared::AuthReloader;
pub use streams::StreamConfig;
pub use streams::{DEFAULT_STREAM, OFFSETS_STREAM, RETAINED_STREAM, SESSIONS_STREAM, STREAMS_STREAM};
pub use websocket::WEBSOCKET_PATH;
