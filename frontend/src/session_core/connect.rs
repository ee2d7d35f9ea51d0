//! The decisions of a session's life around one connection: at CONNECT (which client id,
//! how long the session lasts, what becomes of a stored session and of a will still waiting
//! from the previous connection) and at the end (is the session kept, does the will go out
//! now, later, or not at all, and is the stored record saved or deleted).

use crate::session_state::NEVER_EXPIRES;

/// What these decisions need of a CONNECT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectRequest {
    /// MQTT 5 (else 3.1 or 3.1.1).
    pub(crate) v5: bool,
    /// Clean Start (Clean Session in 3.1.1).
    pub(crate) clean_start: bool,
    /// The client id's length in bytes as sent; 0 when the client sent none.
    pub(crate) client_id_len: usize,
    /// The Session Expiry Interval property (MQTT 5 only), in seconds.
    pub(crate) session_expiry_interval: Option<u32>,
    /// The will's Will Delay Interval in seconds (0 when absent); `None` without a will.
    pub(crate) will_delay: Option<u32>,
}

/// The broker's settings these decisions follow (`[limits]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionLimits {
    /// `max_client_id_length`: a client id is a key of the session store and of `$sessions`.
    pub(crate) max_client_id_length: usize,
    /// `v311_session_expiry`: how long a 3.1.1 persistent session lasts; `None`: for ever.
    pub(crate) v311_session_expiry: Option<u32>,
}

/// Whose client id the session goes under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientId {
    /// The one the client sent.
    AsSent,
    /// One the broker makes up (an empty id with Clean Start, or any empty id in MQTT 5),
    /// returned in the CONNACK's Assigned Client Identifier.
    Assign,
}

/// What a CONNECT gets before any shared state is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Refused with CONNACK 0x85 Client Identifier not valid (3.1.1: return code 0x02): the
    /// id is too long, or empty in a 3.1.1 CONNECT that asks to keep its session.
    ClientIdNotValid,
    /// Accepted, as far as the CONNECT alone can say.
    Accept(SessionPlan),
}

/// The session a CONNECT asks for; it answers the later questions of the connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionPlan {
    pub(crate) client_id: ClientId,
    /// Whether the client asks for a session that outlives the connection: such a session
    /// counts against `max_sessions` (a 3.1.1 client asks with Clean Session 0, whatever
    /// `v311_session_expiry` then makes of it).
    pub(crate) persistent: bool,
    /// The Session Expiry Interval the session starts with, in seconds (0: it ends with the
    /// connection; [`NEVER_EXPIRES`]: never).
    pub(crate) expiry_interval: u32,
    clean_start: bool,
    will_delay: Option<u32>,
}

/// Decides what a CONNECT gets from the packet alone.
pub(crate) fn admit(request: &ConnectRequest, limits: &SessionLimits) -> Admission {
    let too_long = request.client_id_len > limits.max_client_id_length;
    let client_id = match request.client_id_len {
        _ if too_long => return Admission::ClientIdNotValid,
        // MQTT 3.1.1 lets a server assign an id only to a client that keeps no session.
        0 if !request.v5 && !request.clean_start => return Admission::ClientIdNotValid,
        0 => ClientId::Assign,
        _ => ClientId::AsSent,
    };
    let persistent = match request.v5 {
        true => request.session_expiry_interval.unwrap_or(0) > 0,
        false => !request.clean_start,
    };
    let expiry_interval = match (request.v5, request.clean_start) {
        (true, _) => request.session_expiry_interval.unwrap_or(0),
        (false, true) => 0,
        // 3.1.1 cannot say how long; `v311_session_expiry` does.
        (false, false) => limits.v311_session_expiry.unwrap_or(NEVER_EXPIRES),
    };
    Admission::Accept(SessionPlan {
        client_id,
        persistent,
        expiry_interval,
        clean_start: request.clean_start,
        will_delay: request.will_delay,
    })
}

/// What becomes of a will the client id's previous connection left waiting for its Will
/// Delay Interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DelayedWill {
    /// Clean Start ends the previous session, and a session's end sends its will: now.
    PublishNow,
    /// The session goes on: the will is not sent (MQTT 5, 3.1.3.2.2).
    Cancel,
}

/// What becomes of the client id's stored session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredSession {
    /// None was stored (or it had expired).
    None,
    /// Taken up again: CONNACK says Session Present.
    Resume,
    /// Clean Start: it is deleted, from `$sessions` too.
    Discard,
}

impl StoredSession {
    /// The CONNACK's Session Present flag.
    pub(crate) fn session_present(self) -> bool {
        self == StoredSession::Resume
    }
}

/// How a connection ended, as far as the session is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The CONNACK could not be written: the connection never ran.
    NotConnected,
    /// The network connection closed without a DISCONNECT.
    Quiet,
    /// The client sent DISCONNECT: `with_will` for MQTT 5 reason 0x04 Disconnect with Will
    /// Message; `session_expiry` is a new Session Expiry Interval it sent (MQTT 5).
    ClientDisconnect { with_will: bool, session_expiry: Option<u32> },
    /// We ended it: a protocol error, keep alive, a failed write, shutdown, or another
    /// connection taking the client id over.
    Server,
}

impl SessionPlan {
    /// A will left waiting by the previous connection with this client id.
    pub(crate) fn delayed_will(&self) -> DelayedWill {
        if self.clean_start { DelayedWill::PublishNow } else { DelayedWill::Cancel }
    }

    /// The client id's stored session, `found` or not (an expired one is not found).
    pub(crate) fn stored_session(&self, found: bool) -> StoredSession {
        match (found, self.clean_start) {
            (false, _) => StoredSession::None,
            (true, false) => StoredSession::Resume,
            (true, true) => StoredSession::Discard,
        }
    }

    /// The size of the window of our QoS 1 and 2 messages in flight to the client: its
    /// Receive Maximum (MQTT 5; none in 3.1.1), held to the broker's `max_inflight`.
    pub(crate) fn outbound_window(v5: bool, client_receive_maximum: Option<u16>, max_inflight: u16) -> u16 {
        let receive_maximum = if v5 { client_receive_maximum.unwrap_or(u16::MAX) } else { u16::MAX };
        receive_maximum.min(max_inflight.max(1))
    }

    /// What the connection's end means for the session.
    pub(crate) fn end(&self, ending: Ending) -> SessionEnd {
        let expiry_interval = match ending {
            Ending::ClientDisconnect { session_expiry: Some(expiry), .. } => expiry,
            _ => self.expiry_interval,
        };
        let connected = ending != Ending::NotConnected;
        // Only a DISCONNECT with reason 0x00 (3.1.1: any DISCONNECT) spares the will.
        let will_due = !matches!(ending, Ending::ClientDisconnect { with_will: false, .. });
        SessionEnd {
            expiry_interval,
            keep_session: connected && expiry_interval > 0,
            close_transport: connected && matches!(ending, Ending::Server),
            will_delay: self.will_delay.filter(|_| will_due),
        }
    }
}

/// The session's end, decided when the connection's two halves have stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionEnd {
    /// The Session Expiry Interval the session ends with: a DISCONNECT may have changed it.
    pub(crate) expiry_interval: u32,
    /// Whether the session outlives the connection: the shell takes its state and saves it.
    pub(crate) keep_session: bool,
    /// Whether we ended the connection, so the shell closes it gracefully (the client did
    /// not close it, nor say DISCONNECT).
    pub(crate) close_transport: bool,
    /// The will's delay when it is due (`None`: no will, or the client spared it).
    will_delay: Option<u32>,
}

/// What to do with the will at the connection's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WillAction {
    /// No will, or a DISCONNECT that spares it.
    None,
    /// Publish it now.
    PublishNow,
    /// Keep it in the saved session record and publish it at `due_at_ms` (unix ms), unless
    /// the client comes back first; the session's expiry sends it earlier.
    Delay { due_at_ms: i64 },
}

/// What to do with the session's record in `$sessions` at the connection's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordAction {
    /// Save the session's state, durably, with the will when it is delayed.
    Save,
    /// Write a tombstone: a record was written for this client id (resumed, or written while
    /// connected) and the session ends with the connection.
    Delete,
    /// Nothing was ever written: nothing to do.
    Nothing,
}

impl SessionEnd {
    /// The will, at `now_ms`. Its delay is held to the session's life: a session that ends
    /// now sends it now (MQTT 5, 3.1.3.2.2).
    pub(crate) fn will(&self, now_ms: i64) -> WillAction {
        let Some(delay) = self.will_delay else { return WillAction::None };
        let delay = delay.min(if self.keep_session { self.expiry_interval } else { 0 });
        match delay {
            0 => WillAction::PublishNow,
            delay => WillAction::Delay { due_at_ms: now_ms.saturating_add(i64::from(delay) * 1000) },
        }
    }

    /// The session's record; `persisted`: whether one was written for this client id
    /// (a resumed session, or a write while connected).
    pub(crate) fn record(&self, persisted: bool) -> RecordAction {
        match (self.keep_session, persisted) {
            (true, _) => RecordAction::Save,
            (false, true) => RecordAction::Delete,
            (false, false) => RecordAction::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SessionLimits = SessionLimits { max_client_id_length: 23, v311_session_expiry: None };
    const NOW: i64 = 1_700_000_000_000;

    fn request(v5: bool, clean_start: bool) -> ConnectRequest {
        ConnectRequest { v5, clean_start, client_id_len: 6, session_expiry_interval: None, will_delay: None }
    }

    fn plan(request: ConnectRequest) -> SessionPlan {
        match admit(&request, &LIMITS) {
            Admission::Accept(plan) => plan,
            refused => panic!("refused: {refused:?}"),
        }
    }

    fn v5_with(expiry: Option<u32>, will_delay: Option<u32>) -> SessionPlan {
        plan(ConnectRequest { session_expiry_interval: expiry, will_delay, ..request(true, false) })
    }

    // CONNECT: the client id.

    #[test]
    fn a_client_id_as_sent_is_kept() {
        assert_eq!(plan(request(true, true)).client_id, ClientId::AsSent);
        assert_eq!(plan(request(false, false)).client_id, ClientId::AsSent);
    }

    #[test]
    fn an_empty_client_id_is_assigned_in_mqtt5_whatever_clean_start() {
        for clean_start in [true, false] {
            let request = ConnectRequest { client_id_len: 0, ..request(true, clean_start) };
            assert_eq!(plan(request).client_id, ClientId::Assign, "clean start {clean_start}");
        }
    }

    #[test]
    fn an_empty_client_id_is_assigned_in_mqtt311_only_with_clean_session() {
        let clean = ConnectRequest { client_id_len: 0, ..request(false, true) };
        assert_eq!(plan(clean).client_id, ClientId::Assign);
        let persistent = ConnectRequest { client_id_len: 0, ..request(false, false) };
        assert_eq!(admit(&persistent, &LIMITS), Admission::ClientIdNotValid);
    }

    #[test]
    fn a_client_id_longer_than_the_limit_is_refused_at_the_limit_it_is_not() {
        for v5 in [true, false] {
            let at_limit = ConnectRequest { client_id_len: 23, ..request(v5, true) };
            assert_eq!(plan(at_limit).client_id, ClientId::AsSent);
            let over = ConnectRequest { client_id_len: 24, ..request(v5, true) };
            assert_eq!(admit(&over, &LIMITS), Admission::ClientIdNotValid);
        }
    }

    // CONNECT: how long the session lasts.

    #[test]
    fn mqtt5_session_expiry_comes_from_the_property_whatever_clean_start() {
        for clean_start in [true, false] {
            let none = plan(request(true, clean_start));
            assert_eq!((none.expiry_interval, none.persistent), (0, false));
            let zero = plan(ConnectRequest { session_expiry_interval: Some(0), ..request(true, clean_start) });
            assert_eq!((zero.expiry_interval, zero.persistent), (0, false));
            let some = plan(ConnectRequest { session_expiry_interval: Some(300), ..request(true, clean_start) });
            assert_eq!((some.expiry_interval, some.persistent), (300, true));
        }
    }

    #[test]
    fn mqtt311_clean_session_ends_with_the_connection() {
        let limits = SessionLimits { v311_session_expiry: Some(60), ..LIMITS };
        let Admission::Accept(plan) = admit(&request(false, true), &limits) else { panic!("refused") };
        assert_eq!((plan.expiry_interval, plan.persistent), (0, false));
    }

    #[test]
    fn mqtt311_persistent_session_lasts_v311_session_expiry_or_for_ever() {
        assert_eq!(plan(request(false, false)).expiry_interval, NEVER_EXPIRES);
        assert!(plan(request(false, false)).persistent);
        let limits = SessionLimits { v311_session_expiry: Some(60), ..LIMITS };
        let Admission::Accept(plan) = admit(&request(false, false), &limits) else { panic!("refused") };
        assert_eq!((plan.expiry_interval, plan.persistent), (60, true));
    }

    #[test]
    fn mqtt311_persistent_session_asked_for_counts_even_with_a_zero_expiry() {
        // `v311_session_expiry = 0` makes it end with the connection, but the client asked for
        // one: it still counts against `max_sessions`.
        let limits = SessionLimits { v311_session_expiry: Some(0), ..LIMITS };
        let Admission::Accept(plan) = admit(&request(false, false), &limits) else { panic!("refused") };
        assert_eq!((plan.expiry_interval, plan.persistent), (0, true));
    }

    // CONNECT: the previous connection's will and the stored session (also after a takeover).

    #[test]
    fn clean_start_publishes_a_waiting_will_and_discards_the_stored_session() {
        let plan = plan(request(true, true));
        assert_eq!(plan.delayed_will(), DelayedWill::PublishNow);
        assert_eq!(plan.stored_session(true), StoredSession::Discard);
        assert!(!plan.stored_session(true).session_present());
        assert_eq!(plan.stored_session(false), StoredSession::None);
        assert!(!plan.stored_session(false).session_present());
    }

    #[test]
    fn resuming_cancels_a_waiting_will_and_resumes_the_stored_session() {
        let plan = plan(request(true, false));
        assert_eq!(plan.delayed_will(), DelayedWill::Cancel);
        assert_eq!(plan.stored_session(true), StoredSession::Resume);
        assert!(plan.stored_session(true).session_present());
        assert_eq!(plan.stored_session(false), StoredSession::None);
        assert!(!plan.stored_session(false).session_present());
    }

    #[test]
    fn mqtt311_clean_session_discards_and_persistent_resumes() {
        assert_eq!(plan(request(false, true)).stored_session(true), StoredSession::Discard);
        assert_eq!(plan(request(false, false)).stored_session(true), StoredSession::Resume);
    }

    // CONNECT: the window of messages in flight to the client.

    #[test]
    fn the_outbound_window_is_the_client_receive_maximum_held_to_max_inflight() {
        assert_eq!(SessionPlan::outbound_window(true, Some(10), 100), 10);
        assert_eq!(SessionPlan::outbound_window(true, Some(500), 100), 100);
        assert_eq!(SessionPlan::outbound_window(true, None, 100), 100);
        // 3.1.1 has no Receive Maximum: whatever came in the packet is not one.
        assert_eq!(SessionPlan::outbound_window(false, Some(10), 100), 100);
        // `max_inflight` 0 still lets one message through.
        assert_eq!(SessionPlan::outbound_window(true, Some(10), 0), 1);
    }

    // The end: is the session kept, is the connection closed by us.

    #[test]
    fn a_session_with_an_expiry_is_kept_and_saved() {
        let end = v5_with(Some(300), None).end(Ending::Quiet);
        assert_eq!((end.expiry_interval, end.keep_session), (300, true));
        assert_eq!(end.record(false), RecordAction::Save);
        assert_eq!(end.record(true), RecordAction::Save);
    }

    #[test]
    fn a_session_without_expiry_is_not_kept_and_its_record_is_deleted_if_written() {
        let end = v5_with(None, None).end(Ending::Quiet);
        assert!(!end.keep_session);
        assert_eq!(end.record(true), RecordAction::Delete);
        assert_eq!(end.record(false), RecordAction::Nothing);
    }

    #[test]
    fn a_disconnect_sets_a_new_session_expiry_either_way() {
        let shortened =
            v5_with(Some(300), None).end(Ending::ClientDisconnect { with_will: false, session_expiry: Some(0) });
        assert_eq!((shortened.expiry_interval, shortened.keep_session), (0, false));
        assert_eq!(shortened.record(true), RecordAction::Delete);
        let lengthened =
            v5_with(Some(300), None).end(Ending::ClientDisconnect { with_will: false, session_expiry: Some(900) });
        assert_eq!((lengthened.expiry_interval, lengthened.keep_session), (900, true));
        let unchanged =
            v5_with(Some(300), None).end(Ending::ClientDisconnect { with_will: false, session_expiry: None });
        assert_eq!(unchanged.expiry_interval, 300);
    }

    #[test]
    fn a_connection_that_never_ran_keeps_no_session() {
        // The CONNACK could not be written: nothing was delivered, nothing is saved, and a
        // resumed session's record is deleted.
        let end = v5_with(Some(300), Some(0)).end(Ending::NotConnected);
        assert!(!end.keep_session);
        assert!(!end.close_transport);
        assert_eq!(end.record(true), RecordAction::Delete);
        assert_eq!(end.will(NOW), WillAction::PublishNow);
    }

    #[test]
    fn only_a_connection_we_ended_is_closed_by_us() {
        let plan = v5_with(None, None);
        assert!(plan.end(Ending::Server).close_transport);
        assert!(!plan.end(Ending::Quiet).close_transport);
        let disconnect = Ending::ClientDisconnect { with_will: true, session_expiry: None };
        assert!(!plan.end(disconnect).close_transport);
    }

    // The end: the will.

    #[test]
    fn no_will_nothing_to_send() {
        for ending in [Ending::Quiet, Ending::Server, Ending::NotConnected] {
            assert_eq!(v5_with(Some(300), None).end(ending).will(NOW), WillAction::None);
        }
    }

    #[test]
    fn a_network_close_or_an_end_we_chose_sends_the_will() {
        for ending in [Ending::Quiet, Ending::Server] {
            assert_eq!(v5_with(None, Some(0)).end(ending).will(NOW), WillAction::PublishNow, "{ending:?}");
        }
    }

    #[test]
    fn a_normal_disconnect_spares_the_will() {
        let end = v5_with(Some(300), Some(30)).end(Ending::ClientDisconnect { with_will: false, session_expiry: None });
        assert_eq!(end.will(NOW), WillAction::None);
        // MQTT 3.1.1 has no reason codes: every DISCONNECT is a normal one.
        let v311 = plan(ConnectRequest { will_delay: Some(0), ..request(false, false) });
        let end = v311.end(Ending::ClientDisconnect { with_will: false, session_expiry: None });
        assert_eq!(end.will(NOW), WillAction::None);
    }

    #[test]
    fn disconnect_with_will_message_sends_it() {
        let end = v5_with(None, Some(0)).end(Ending::ClientDisconnect { with_will: true, session_expiry: None });
        assert_eq!(end.will(NOW), WillAction::PublishNow);
    }

    #[test]
    fn a_will_delay_within_the_session_waits_in_the_session_record() {
        let end = v5_with(Some(300), Some(30)).end(Ending::Quiet);
        assert_eq!(end.will(NOW), WillAction::Delay { due_at_ms: NOW + 30_000 });
        assert_eq!(end.record(false), RecordAction::Save);
    }

    #[test]
    fn a_will_delay_is_held_to_the_session_expiry() {
        let end = v5_with(Some(10), Some(30)).end(Ending::Quiet);
        assert_eq!(end.will(NOW), WillAction::Delay { due_at_ms: NOW + 10_000 });
    }

    #[test]
    fn a_will_delay_without_a_kept_session_goes_out_now() {
        assert_eq!(v5_with(None, Some(30)).end(Ending::Quiet).will(NOW), WillAction::PublishNow);
        // A DISCONNECT that sets the expiry to 0 ends the session, and with it the delay.
        let end =
            v5_with(Some(300), Some(30)).end(Ending::ClientDisconnect { with_will: true, session_expiry: Some(0) });
        assert_eq!(end.will(NOW), WillAction::PublishNow);
        assert_eq!(end.record(true), RecordAction::Delete);
    }

    #[test]
    fn a_zero_will_delay_goes_out_now_even_with_a_kept_session() {
        let end = v5_with(Some(300), Some(0)).end(Ending::Quiet);
        assert_eq!(end.will(NOW), WillAction::PublishNow);
        assert_eq!(end.record(false), RecordAction::Save);
    }

    #[test]
    fn a_never_expiring_session_delays_the_will_by_its_own_delay() {
        let v311 = plan(ConnectRequest { will_delay: Some(0), ..request(false, false) });
        assert_eq!(v311.expiry_interval, NEVER_EXPIRES);
        // 3.1.1 wills have no delay.
        assert_eq!(v311.end(Ending::Quiet).will(NOW), WillAction::PublishNow);
        let v5 = v5_with(Some(NEVER_EXPIRES), Some(u32::MAX));
        let due_at_ms = NOW + i64::from(u32::MAX) * 1000;
        assert_eq!(v5.end(Ending::Quiet).will(NOW), WillAction::Delay { due_at_ms });
    }

    // Takeover: the connection taken over ends as one we ended; the new one decides what
    // becomes of the will and the session the old one left.

    #[test]
    fn a_connection_taken_over_sends_or_delays_its_will_and_keeps_its_session() {
        let old = v5_with(Some(300), Some(5));
        let end = old.end(Ending::Server);
        assert!(end.keep_session);
        assert!(end.close_transport);
        assert_eq!(end.will(NOW), WillAction::Delay { due_at_ms: NOW + 5_000 });
        assert_eq!(end.record(true), RecordAction::Save);
        let without_delay = v5_with(Some(300), Some(0)).end(Ending::Server);
        assert_eq!(without_delay.will(NOW), WillAction::PublishNow);
    }

    #[test]
    fn the_connection_taking_over_resumes_or_ends_what_the_old_one_left() {
        let resuming = v5_with(Some(300), None);
        assert_eq!(resuming.delayed_will(), DelayedWill::Cancel);
        assert_eq!(resuming.stored_session(true), StoredSession::Resume);
        let clean = plan(ConnectRequest { session_expiry_interval: Some(300), ..request(true, true) });
        assert_eq!(clean.delayed_will(), DelayedWill::PublishNow);
        assert_eq!(clean.stored_session(true), StoredSession::Discard);
    }
}
