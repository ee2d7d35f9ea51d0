//! `strata-frontend`: Strata's MQTT side.
//!
//! For now this is the MQTT codec ([`codec`]): decoding and encoding every MQTT 3.1, 3.1.1
//! and 5.0 control packet, with the specification's validation and reason codes, and topic
//! names and filters ([`topic`]): validation, wildcard matching and the `$share/` and
//! `$stream/` prefixes. The listener, sessions, subscriptions and the routing of topics to
//! streams arrive with the rest of the MQTT issue. `docs/architecture.md` says why the codec is our own.
#![deny(missing_docs)]

pub mod codec;
pub mod topic;
