//! State shared by every connection: the owners (the client-id registry, the retained
//! messages, the stored sessions, delayed wills, consumer groups, stream definitions, the
//! streams), the auth files in force, config and counters, and the few operations that
//! span owners (publishing a will, session expiry, idle groups, the consumers' positions). The broker (`broker.rs`) builds it at start;
//! connections, the listeners and the admin API hold it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_compaction::Maintenance;
use strata_log::Record;

use crate::client_registry::Registration;
use crate::codec::Publish;
use crate::partition::AppendError;
use crate::record::{self, StoredMessage};
use crate::retained::RetainedStore;
use crate::session_state::SessionState;
use crate::streams::{Routed, Streams};

/// The least time between two scans of the stored sessions for expiry.
const SESSION_SCAN_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// The users (`[auth] password_file`) and topic rights (`[auth] acl_file`) in force. A
/// connection takes both at its CONNECT and keeps them: a reload applies to new connections.
pub(crate) struct AuthFiles {
    pub(crate) authenticator: Mutex<Arc<crate::auth::Authenticator>>,
    /// `None`: no ACL file, everyone may do anything.
    pub(crate) acl: Mutex<Option<Arc<crate::acl::AclFile>>>,
}

impl AuthFiles {
    /// Who may connect, now.
    pub(crate) fn authenticator(&self) -> Arc<crate::auth::Authenticator> {
        Arc::clone(&lock(&self.authenticator))
    }

    /// Who may read and write which topics, now.
    pub(crate) fn acl(&self) -> Option<Arc<crate::acl::AclFile>> {
        lock(&self.acl).clone()
    }
}

/// Reloads `[auth] password_file` and `[auth] acl_file` (the serve command calls it on
/// SIGHUP). New connections use what it loaded; connections already up keep the rights they
/// had. A file that cannot be used changes nothing: the previous users or rules stay.
#[derive(Clone)]
pub struct AuthReloader {
    pub(crate) files: Arc<AuthFiles>,
    pub(crate) config: crate::auth::AuthConfig,
}

impl AuthReloader {
    /// Reads the password file again: `Ok(None)` when none is configured, else its path and
    /// how many users it has. Blocking (it reads a file): call it off the async threads.
    pub fn reload_password_file(&self) -> Result<Option<(PathBuf, usize)>, crate::auth::PasswordFileError> {
        let Some(path) = &self.config.password_file else { return Ok(None) };
        let users = crate::auth::PasswordFile::load(path)?;
        let count = users.len();
        let mut authenticator = lock(&self.files.authenticator);
        *authenticator = Arc::new(authenticator.with_users(users));
        Ok(Some((path.clone(), count)))
    }

    /// Reads the ACL file again: `Ok(None)` when none is configured, else its path.
    /// Blocking, like [`AuthReloader::reload_password_file`].
    pub fn reload_acl_file(&self) -> Result<Option<PathBuf>, crate::acl::AclFileError> {
        let Some(path) = &self.config.acl_file else { return Ok(None) };
        let acl = crate::acl::AclFile::load(path)?;
        *lock(&self.files.acl) = Some(Arc::new(acl));
        Ok(Some(path.clone()))
    }
}

/// State shared by all connections.
pub(crate) struct Shared {
    pub(crate) config: crate::config::BrokerConfig,
    /// Every stream's partitions and writers; a publish goes where [`Streams::route`] says.
    pub(crate) streams: Streams,
    /// The retained messages, applied from `$retained`.
    pub(crate) retained: RetainedStore,
    /// The persistent sessions: parked while disconnected, written to `$sessions`.
    pub(crate) sessions: crate::session_store::SessionStore,
    /// Wills waiting out their Will Delay Interval.
    pub(crate) wills: crate::wills::WillScheduler,
    /// The stream definitions created or altered at runtime, applied from `$streams`.
    pub(crate) definitions: crate::stream_definitions::DefinitionStore,
    /// Serialises the admin API's stream changes and offset resets.
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    /// Consumer groups (`$share/<group>/...`) by group name, removed once idle for
    /// `share_group_idle_expiry` ([`Shared::expire_idle_groups`]), and their committed
    /// offsets applied from `$offsets`.
    pub(crate) groups: crate::group_registry::GroupRegistry,
    /// The connected client ids, and takeover.
    pub(crate) clients: crate::client_registry::ClientRegistry,
    /// Connection ids, group member ids and assigned client ids come from it.
    pub(crate) next_connection_id: AtomicU64,
    pub(crate) started_at_ms: u64,
    /// Open connections, for `limits.max_connections`.
    pub(crate) connections: crate::limits::ConnectionCount,
    /// Open connections and connect rate per client address.
    pub(crate) peers: crate::limits::PeerLimiter,
    /// Counters and histograms (`metrics.rs`).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Who may connect.
    /// and who may read and write which topics: reloaded on SIGHUP.
    pub(crate) auth: Arc<AuthFiles>,
    /// The in-memory `$SYS` topics.
    pub(crate) sys: crate::sys_topics::SysTopics,
    /// Tells connections to end, and counts them, at shutdown.
    pub(crate) shutdown: crate::shutdown::ShutdownState,
    pub(crate) maintenance_totals: strata_compaction::TotalsReader,
    /// Retention and compaction, shared with the admin API (`admin.rs`) for runs on demand;
    /// taken out at shutdown, after which the admin API can no longer start one.
    pub(crate) maintenance: Mutex<Option<Arc<Maintenance>>>,
}

impl Shared {
    /// Registers `client_id` for a new connection of `user` (`None`: anonymous)
    /// ([`crate::client_registry::ClientRegistry::register`]), with the owner of its stored
    /// session looked at under the registry's lock.
    pub(crate) fn register(&self, client_id: &str, user: Option<&str>) -> Option<Registration> {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        self.clients.register(client_id, user, connection_id, || self.sessions.parked_owner(client_id))
    }

    /// Room for a persistent session of `client_id` under `max_sessions` (issue 22), held
    /// until the reservation is dropped; `None` when there is none
    /// ([`crate::session_store::SessionStore::reserve`]).
    pub(crate) fn reserve_session(&self, client_id: &str) -> Option<crate::session_store::Reservation<'_>> {
        let max = self.config.limits.max_sessions;
        // Looked at first, under its own lock: no order to keep with the store's.
        let connected = max.is_some() && self.clients.is_connected(client_id);
        self.sessions.reserve(client_id, max, connected)
    }

    /// Stores a retained message (or deletes the topic's, for an empty payload) in
    /// `$retained`, durably; the retained messages show it once this returns.
    pub(crate) async fn store_retained(&self, record: Record) -> Result<(), AppendError> {
        self.retained.store(record).await
    }

    /// Room for a retained publish of `payload_len` bytes to `topic` in
    /// `max_retained_messages` and `max_retained_bytes` (issue 22), held until the
    /// reservation is dropped; `None` when it does not fit.
    pub(crate) fn reserve_retained(
        &self,
        topic: &str,
        payload_len: usize,
    ) -> Option<crate::retained::RetainedReservation<'_>> {
        self.retained.reserve(topic, payload_len, &self.config.limits)
    }

    /// The retained messages whose topic matches `filter`, each with its offset in
    /// `$retained`, then the matching `$SYS` values (no offset: they come from memory, like
    /// retained messages; `sys_topics.rs`).
    pub(crate) fn retained_matching(&self, filter: &str) -> Vec<(StoredMessage, Option<u64>)> {
        let mut matching: Vec<(StoredMessage, Option<u64>)> = self
            .retained
            .matching(filter)
            .into_iter()
            .map(|m| {
                let offset = m.offset;
                (m, Some(offset))
            })
            .collect();
        matching.extend(self.sys.matching(filter).into_iter().map(|m| (m, None)));
        matching
    }

    /// The retained message at `offset` in `$retained`, if it is still its topic's current
    /// one (not replaced or deleted since).
    pub(crate) fn retained_at(&self, offset: u64) -> Option<StoredMessage> {
        self.retained.at(offset)
    }

    /// Publishes a message the broker itself originates (a will) through the normal path:
    /// `$retained` first if RETAIN is set, then the stream, durably.
    pub(crate) async fn publish(&self, publish: &Publish, client_id: &str) -> Result<u64, String> {
        let record = record::to_record(publish, client_id, now_ms());
        if publish.retain {
            self.store_retained(record.clone()).await?;
        }
        let Routed::Local(partition) = self.streams.route(&publish.topic, &publish.properties.user_properties);
        Ok(partition.propose(record).await?)
    }

    /// Checks the session of `client_id` out for `connection_id`, unless it expired
    /// ([`crate::session_store::SessionStore::take`]).
    pub(crate) async fn take_session(&self, client_id: &str, connection_id: u64) -> Option<SessionState> {
        self.sessions.take(client_id, connection_id).await
    }

    /// Writes `state` (or a tombstone for `None`) to `$sessions` as the latest record of
    /// `client_id`; returns once it is committed and applied, so the store shows it.
    pub(crate) async fn save_session(&self, client_id: &str, state: Option<&SessionState>) {
        self.sessions.save(client_id, state).await
    }

    /// Holds `will` of `client_id` until `due_at_ms` (unix ms), then publishes it unless
    /// something took it first ([`crate::wills::WillScheduler`]), and drops it from the
    /// session record.
    pub(crate) fn delay_will(self: &Arc<Self>, client_id: &str, will: Publish, due_at_ms: i64) {
        let token = self.wills.hold(client_id, will);
        let shared = Arc::clone(self);
        let client_id = client_id.to_owned();
        let delay = crate::wills::delay_until(due_at_ms, now_ms());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(will) = shared.wills.take_due(&client_id, token) else { return };
            if let Err(error) = shared.publish(&will, &client_id).await {
                tracing::warn!(client_id, %error, "will not published");
            }
            // Sent: a restart must not send it again.
            shared
                .sessions
                .update_parked(&client_id, |session| session.will.take().map(|_| Some(session.clone())))
                .await;
        });
    }

    /// Takes the will still waiting for `client_id`'s Will Delay Interval, if any.
    pub(crate) fn take_delayed_will(&self, client_id: &str) -> Option<Publish> {
        self.wills.take(client_id)
    }

    /// Ends disconnected sessions whose expiry has passed: tombstones in `$sessions`, and
    /// their delayed wills go out now (the session ended first).
    /// Returns when the earliest of the sessions left expires (unix ms), if any can.
    async fn expire_sessions(self: &Arc<Self>) -> Option<i64> {
        let now = now_ms();
        let (expired, next_expiry) = self.sessions.expired(now);
        for client_id in expired {
            // Its tombstone, unless a client reconnecting meanwhile checked it out first (it
            // found no session, as it expired, and cancelled the delayed will).
            if !self.sessions.expire(&client_id, now).await {
                continue;
            }
            tracing::debug!(client_id, "session expired");
            if let Some(will) = self.take_delayed_will(&client_id)
                && let Err(error) = self.publish(&will, &client_id).await
            {
                tracing::warn!(client_id, %error, "will not published");
            }
        }
        next_expiry
    }

    /// Expires disconnected sessions as they come due, until aborted. Sleeps until the
    /// earliest expiry, or until a session due sooner is stored; an idle broker with no
    /// session that can expire does not wake at all. Scans at most once a second, as the
    /// scan visits every stored session: a session may end up to a second late.
    pub(crate) async fn expire_sessions_when_due(self: Arc<Self>) {
        loop {
            let stored = self.sessions.parked_sooner();
            self.sessions.set_next_expiry(i64::MIN);
            let scanned = tokio::time::Instant::now();
            let next = self.expire_sessions().await;
            self.sessions.set_next_expiry(next.unwrap_or(i64::MAX));
            match next {
                Some(at_ms) => {
                    // One millisecond late rather than early: the expiry is checked against
                    // the wall clock, the sleep runs on the monotonic one.
                    let wait = std::time::Duration::from_millis(u64::try_from(at_ms - now_ms()).unwrap_or(0) + 1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stored => {}
                    }
                }
                None => stored.await,
            }
            tokio::time::sleep_until(scanned + SESSION_SCAN_GAP).await;
        }
    }

    /// The group `name` consuming `filter`, created (and started) on first use. A group has
    /// one filter: joining it with another while it exists is refused with the reason.
    pub(crate) fn group(
        &self,
        name: &str,
        filter: &str,
        since: &[(u32, u64)],
    ) -> Result<Arc<crate::groups::Group>, String> {
        self.groups.group(name, filter, &self.streams, since)
    }

    /// Removes the `$share` groups that have gone `share_group_idle_expiry` without a member
    /// (issue 22), and tombstones their committed offsets in `$offsets`. A group counts as
    /// idle while nothing but the registry and its own task holds it (members and a
    /// SUBSCRIBE joining it hold it too) and no persistent session has a `$share/<group>/`
    /// subscription: a session coming back expects its group where it left it. Held-or-not
    /// is looked at under the registry's lock, where new holders come from, so a group is
    /// never removed under a client about to join it.
    pub(crate) async fn expire_idle_groups(self: Arc<Self>) {
        let expiry = self.config.share_group_idle_expiry;
        let scan = (expiry / 4).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(60));
        let mut idle_since: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            tokio::time::sleep(scan).await;
            let now = tokio::time::Instant::now();
            let wanted = self.sessions.wanted_share_groups();
            let removed = self.groups.remove_idle(
                // The registry's reference and the group task's.
                |name, group| Arc::strong_count(group) <= 2 && !wanted.iter().any(|w| w == name),
                |idle_now| {
                    idle_since.retain(|name, _| idle_now.contains(name));
                    for name in idle_now {
                        idle_since.entry(name.clone()).or_insert(now);
                    }
                    let expired: Vec<String> = idle_since
                        .iter()
                        .filter(|(_, since)| now.duration_since(**since) >= expiry)
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in &expired {
                        idle_since.remove(name);
                    }
                    expired
                },
            );
            for group in removed {
                let keys = group.stop().await;
                match self.groups.forget(&group.name, keys).await {
                    Ok(offsets) => {
                        tracing::info!(group = %group.name, offsets, ?expiry, "removed an idle $share group")
                    }
                    Err(error) => tracing::warn!(group = %group.name, %error, "offsets of a removed group not removed"),
                }
            }
        }
    }

    /// A new group member id.
    pub(crate) fn next_member_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A client identifier for a client that sent none; unique across restarts.
    pub(crate) fn assign_client_id(&self) -> String {
        let n = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        format!("strata-{:x}-{n}", self.started_at_ms)
    }

    /// Every `$share` group and persistent session with its positions, read now (the admin
    /// API and the lag metrics).
    pub(crate) fn consumers(&self) -> Vec<crate::consumers::GroupInfo> {
        let registry = self.streams.registry();
        let live = self.groups.all_live();
        let restored = self.groups.committed_offsets();
        let sessions = self.sessions.views();
        self.clients.read(|connected| crate::consumers::consumers(&registry, &live, &restored, sessions, connected))
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
