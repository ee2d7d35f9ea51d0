//! Per-broker and per-connection limits from `[mqtt]`: how many connections (in all and per
//! client address, and how fast one address may open them), how long and deep a topic may be,
//! the Server Keep Alive cap and our Topic Alias Maximum. It also owns the counts that
//! `max_connections` and the per-address limits are checked against.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::topic::TopicLimits;

/// Limits announced to or enforced on every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once (TCP and WebSocket together); `None`: no limit. A client
    /// beyond it gets CONNACK 0x97 Quota Exceeded (MQTT 5) or 0x03 Server Unavailable (3.1.1).
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client address (IP), counted from accept;
    /// beyond it a new connection is closed at once. `None`: no limit. Loopback clients are
    /// local processes, held by `max_connections` alone.
    pub max_connections_per_ip: Option<usize>,
    /// Most new connections per second from one client address, with a burst of as many; a
    /// connection beyond it is closed at once. `None`: no limit. Not for loopback clients.
    pub max_connect_rate_per_ip: Option<u32>,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Longest client id, in bytes; a longer one gets CONNACK 0x85 Client Identifier not
    /// valid (MQTT 5) or 0x02 Identifier rejected (3.1.1).
    pub max_client_id_length: usize,
    /// Most `/`-separated levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Server Keep Alive: the longest keep alive an MQTT 5 client gets, in seconds, announced
    /// in CONNACK when it lowers the client's (a client's 0, no keep alive, is raised to it).
    /// `None`: the client's keep alive is used as sent.
    pub max_keep_alive: Option<u16>,
    /// Most subscriptions one session holds (plain, `$share` and `$stream` together); a
    /// SUBSCRIBE to a new filter beyond it gets 0x97 Quota exceeded in that filter's SUBACK
    /// slot (0x80 in 3.1.1). Re-subscribing a filter held already does not count twice.
    /// `None`: no limit.
    pub max_subscriptions_per_client: Option<usize>,
    /// The Session Expiry Interval, in seconds, of an MQTT 3.1.1 persistent session (clean
    /// session 0), which cannot say one itself; `None`: it never expires.
    pub v311_session_expiry: Option<u32>,
    /// Most retained messages stored (topics with one); a retained publish that would add
    /// one more is refused. `None`: no limit.
    pub max_retained_messages: Option<usize>,
    /// Most payload bytes of all retained messages together; a retained publish that would
    /// go beyond is refused. `None`: no limit.
    pub max_retained_bytes: Option<u64>,
    /// Most persistent sessions stored, connected or not; a CONNECT that would start another
    /// gets CONNACK 0x97 Quota exceeded (3.1.1: 0x03 Server unavailable). `None`: no limit.
    pub max_sessions: Option<usize>,
    /// How long one write to a client may make no progress (its socket buffers full: the
    /// client stopped reading) before the connection is closed, its session saved as on any
    /// close. `None`: no limit.
    pub write_timeout: Option<std::time::Duration>,
    /// Our Topic Alias Maximum, announced in the MQTT 5 CONNACK; 0 refuses topic aliases.
    pub topic_alias_maximum: u16,
    /// How many offsets a live reader whose subscriptions are all QoS 0 may fall behind a
    /// partition's high watermark before it skips ahead to half that far behind (the skipped
    /// offsets are counted).
    /// `None`: never skip.
    pub qos0_max_lag: Option<u64>,
}

/// Default [`Limits::max_connections_per_ip`]: room for a NAT gateway of devices, not for one
/// host opening sockets without end.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// Default [`Limits::max_connect_rate_per_ip`]: a whole fleet behind one address reconnecting
/// after a restart gets in within seconds; a connect flood from one address is slowed.
pub const DEFAULT_MAX_CONNECT_RATE_PER_IP: u32 = 200;

/// Default [`Limits::max_client_id_length`]: well above generated ids (UUIDs are 36 bytes)
/// and MQTT 3.1's own 23, far below the 65,535 the encoding allows.
pub const DEFAULT_MAX_CLIENT_ID_LENGTH: usize = 256;

/// Default [`Limits::max_keep_alive`]: an hour. A client that asks for no keep alive (0), or
/// for up to 18 hours, would otherwise hold a dead connection's resources that long.
pub const DEFAULT_MAX_KEEP_ALIVE: u16 = 3600;

/// Default [`Limits::max_subscriptions_per_client`]: far more than a device subscribes to, and
/// each subscription costs memory and matching time on every delivery to the session.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 1024;

/// Default [`Limits::v311_session_expiry`]: a week. A 3.1.1 client that never comes back
/// would otherwise keep its session, and the messages it holds back, for ever.
pub const DEFAULT_V311_SESSION_EXPIRY: u32 = 7 * 24 * 3600;

/// Default [`Limits::max_retained_messages`]: each is held in memory and sent to every new
/// matching subscriber.
pub const DEFAULT_MAX_RETAINED_MESSAGES: usize = 100_000;
/// Default [`Limits::max_retained_bytes`]: 256 MiB of payloads held in memory.
pub const DEFAULT_MAX_RETAINED_BYTES: u64 = 256 << 20;

/// Default [`Limits::max_sessions`]: each stored session is held in memory and in
/// `$sessions`, and keeps its positions' messages from being acknowledged away.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// Default [`Limits::write_timeout`]: well beyond a slow link's stall, far below holding a
/// dead reader's connection for ever.
pub const DEFAULT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Default [`Limits::qos0_max_lag`]: 100,000 messages of 100 bytes are 10 MB behind.
pub const DEFAULT_QOS0_MAX_LAG: u64 = 100_000;

impl Default for Limits {
    fn default() -> Self {
        let topics = TopicLimits::default();
        Limits {
            max_connections: None,
            max_connections_per_ip: Some(DEFAULT_MAX_CONNECTIONS_PER_IP),
            max_connect_rate_per_ip: Some(DEFAULT_MAX_CONNECT_RATE_PER_IP),
            max_topic_length: topics.max_length,
            max_client_id_length: DEFAULT_MAX_CLIENT_ID_LENGTH,
            max_topic_levels: topics.max_levels,
            max_keep_alive: Some(DEFAULT_MAX_KEEP_ALIVE),
            max_subscriptions_per_client: Some(DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT),
            v311_session_expiry: Some(DEFAULT_V311_SESSION_EXPIRY),
            max_retained_messages: Some(DEFAULT_MAX_RETAINED_MESSAGES),
            max_retained_bytes: Some(DEFAULT_MAX_RETAINED_BYTES),
            max_sessions: Some(DEFAULT_MAX_SESSIONS),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            topic_alias_maximum: 64,
            qos0_max_lag: Some(DEFAULT_QOS0_MAX_LAG),
        }
    }
}

impl Limits {
    /// The topic limits for [`crate::topic`]'s checks.
    pub fn topics(&self) -> TopicLimits {
        TopicLimits { max_length: self.max_topic_length, max_levels: self.max_topic_levels }
    }

    /// The keep alive a client gets, and whether it differs from what the client asked (so
    /// CONNACK must announce it as Server Keep Alive).
    pub fn keep_alive(&self, requested: u16) -> (u16, bool) {
        match self.max_keep_alive {
            Some(max) if requested == 0 || requested > max => (max, true),
            _ => (requested, false),
        }
    }
}

/// The number of open connections. A [`ConnectionSlot`] holds one until dropped.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCount {
    open: AtomicUsize,
}

/// One counted connection.
pub(crate) struct ConnectionSlot<'a> {
    count: &'a ConnectionCount,
}

impl ConnectionCount {
    /// Takes a slot, unless `max` are already open.
    pub(crate) fn try_acquire(&self, max: Option<usize>) -> Option<ConnectionSlot<'_>> {
        let max = max.unwrap_or(usize::MAX);
        self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < max).then_some(open + 1)).ok()?;
        Some(ConnectionSlot { count: self })
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.count.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a client address may not open another connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRefusal {
    /// `max_connections_per_ip` are open.
    TooMany,
    /// Faster than `max_connect_rate_per_ip`.
    TooFast,
}

/// One address's open connections and its token bucket of connects.
#[derive(Debug)]
struct PeerState {
    open: usize,
    tokens: f64,
    refilled: Instant,
}

/// The per-address limits: open connections and connect rate, by client IP.
#[derive(Debug)]
pub(crate) struct PeerLimiter {
    max_open: Option<usize>,
    rate: Option<u32>,
    peers: Mutex<HashMap<IpAddr, PeerState>>,
}

/// Addresses kept before idle ones (nothing open, bucket full again) are swept out.
const PEERS_BEFORE_SWEEP: usize = 4096;

/// One admitted connection from an address; gives its place back when dropped.
pub(crate) struct PeerSlot<'a> {
    limiter: &'a PeerLimiter,
    /// `None`: an address the limits do not apply to.
    ip: Option<IpAddr>,
}

impl PeerLimiter {
    pub(crate) fn new(limits: &Limits) -> PeerLimiter {
        PeerLimiter {
            max_open: limits.max_connections_per_ip,
            rate: limits.max_connect_rate_per_ip,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a new connection from `ip` at `now`, or says why not.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Result<PeerSlot<'_>, PeerRefusal> {
        if ip.is_loopback() || (self.max_open.is_none() && self.rate.is_none()) {
            return Ok(PeerSlot { limiter: self, ip: None });
        }
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= PEERS_BEFORE_SWEEP {
            let rate = self.rate;
            peers.retain(|_, peer| peer.open > 0 || !bucket_full(peer, rate, now));
        }
        let burst = self.rate.map_or(0.0, f64::from);
        let peer = peers.entry(ip).or_insert(PeerState { open: 0, tokens: burst, refilled: now });
        if self.max_open.is_some_and(|max| peer.open >= max) {
            return Err(PeerRefusal::TooMany);
        }
        if let Some(rate) = self.rate {
            refill(peer, rate, now);
            if peer.tokens < 1.0 {
                return Err(PeerRefusal::TooFast);
            }
            peer.tokens -= 1.0;
        }
        peer.open += 1;
        Ok(PeerSlot { limiter: self, ip: Some(ip) })
    }
}

fn refill(peer: &mut PeerState, rate: u32, now: Instant) {
    let elapsed = now.saturating_duration_since(peer.refilled).as_secs_f64();
    peer.tokens = (peer.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
    peer.refilled = now;
}

fn bucket_full(peer: &PeerState, rate: Option<u32>, now: Instant) -> bool {
    rate.is_none_or(|rate| {
        let elapsed = now.saturating_duration_since(peer.refilled).as_secs_f64();
        peer.tokens + elapsed * f64::from(rate) >= f64::from(rate)
    })
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut peers = self.limiter.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(peer) = peers.get_mut(&ip) {
            peer.open = peer.open.saturating_sub(1);
            if peer.open == 0 && bucket_full(peer, self.limiter.rate, Instant::now()) {
                peers.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let count = ConnectionCount::default();
        let first = count.try_acquire(Some(2)).expect("first");
        let second = count.try_acquire(Some(2)).expect("second");
        assert!(count.try_acquire(Some(2)).is_none());
        drop(first);
        assert!(count.try_acquire(Some(2)).is_some());
        drop(second);
        assert!(count.try_acquire(None).is_some());
    }

    #[test]
    fn an_address_gets_max_open_connections_and_a_burst_then_the_rate() {
        use std::time::Duration;
        let limits = Limits { max_connections_per_ip: Some(3), max_connect_rate_per_ip: Some(4), ..Limits::default() };
        let limiter = PeerLimiter::new(&limits);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        let open: Vec<_> = (0..3).map(|_| limiter.admit(ip, t0).unwrap()).collect();
        assert_eq!(limiter.admit(ip, t0).err(), Some(PeerRefusal::TooMany));
        // Another address has its own count.
        drop(limiter.admit(other, t0).unwrap());
        drop(open);
        // Three connects of a burst of four are spent: one more now, then none.
        let fourth = limiter.admit(ip, t0).unwrap();
        drop(fourth);
        assert_eq!(limiter.admit(ip, t0).err(), Some(PeerRefusal::TooFast));
        // A quarter of a second later, one token (4 per second) is back.
        let later = t0 + Duration::from_millis(250);
        drop(limiter.admit(ip, later).unwrap());
        assert_eq!(limiter.admit(ip, later).err(), Some(PeerRefusal::TooFast));
        // Loopback is not limited.
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let many: Vec<_> = (0..100).map(|_| limiter.admit(local, t0).unwrap()).collect();
        assert_eq!(many.len(), 100);
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let limits = Limits { max_connections_per_ip: Some(3), max_connect_rate_per_ip: None, ..Limits::default() };
        let limiter = PeerLimiter::new(&limits);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        drop(limiter.admit(ip, Instant::now()).unwrap());
        assert!(limiter.peers.lock().unwrap().is_empty(), "an address with nothing open and a full bucket is kept");
    }

    #[test]
    fn keep_alive_is_capped_and_zero_raised() {
        let limits = Limits { max_keep_alive: Some(60), ..Limits::default() };
        assert_eq!(limits.keep_alive(30), (30, false));
        assert_eq!(limits.keep_alive(600), (60, true));
        assert_eq!(limits.keep_alive(0), (60, true));
        assert_eq!(Limits::default().keep_alive(0), (DEFAULT_MAX_KEEP_ALIVE, true));
        let uncapped = Limits { max_keep_alive: None, ..Limits::default() };
        assert_eq!(uncapped.keep_alive(0), (0, false));
    }
}
