//! Why the broker could not start: the crate's error enum. Its own module, below everything
//! that opens partitions, so that opening a stream (`streams.rs`) does not import the broker.

use std::path::PathBuf;

use strata_log::LogError;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An internal stream could not be read back at start.
    #[error("rebuilding from {dir}: {source}")]
    Rebuild {
        /// The partition directory.
        dir: PathBuf,
        /// What went wrong.
        source: LogError,
    },
    /// A replicated partition could not be opened or joined (issue 20).
    #[error("replica of {group}: {source}")]
    Replication {
        /// The partition's group (`<stream>/<partition>`).
        group: String,
        /// What went wrong.
        source: strata_replication::ReplicationError,
    },
    /// The inter-node TLS could not be loaded; `key` names the file's config key.
    #[error("{key}: {source}")]
    ClusterTls {
        /// The config key of the file at fault.
        key: &'static str,
        /// What went wrong.
        source: strata_replication::ReplicationError,
    },
    /// The inter-node listener could not be bound or served.
    #[error("cluster.listen {addr}: {reason}")]
    ClusterListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The maintenance threads did not start.
    #[error("starting compaction of the internal streams: {0}")]
    Maintenance(#[from] strata_compaction::CompactionError),
    /// The partition log did not open.
    #[error("opening partition {dir}: {source}")]
    Log {
        /// The partition directory.
        dir: PathBuf,
        /// What went wrong.
        source: LogError,
    },
    /// `[auth] password_file` cannot be used.
    #[error("auth.password_file: {0}")]
    PasswordFile(#[from] crate::auth::PasswordFileError),
    /// `[auth] acl_file` cannot be used.
    #[error("auth.acl_file: {0}")]
    AclFile(#[from] crate::acl::AclFileError),
    /// A `[tls]` file cannot be used.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A TLS listener (or `use_identity_as_username`) is configured without what it needs.
    #[error("{key} is set, but {needs} is not")]
    TlsIncomplete {
        /// The key that is set.
        key: &'static str,
        /// What it needs.
        needs: &'static str,
    },
    /// The listener did not bind, or a thread did not start.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        source: std::io::Error,
    },
}
