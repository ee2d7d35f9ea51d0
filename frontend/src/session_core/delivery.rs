//! Delivery planning: for each record a cursor read, whether it goes to this session, at
//! what QoS, under which packet identifier, or why not (no subscription wants it, the
//! window is full, it expired, it was acknowledged before the session was resumed). The
//! shell reads the log, pops the record and encodes what the plan says.
//!
//! This is the hot path of every delivery: nothing here allocates beyond the [`Route`] the
//! subscriptions already build, and nothing locks.

use std::collections::HashMap;

use crate::codec::{PacketId, QoS, SubscriptionOptions};
use crate::record::{self, StoredMessage};
use crate::replay::ReplaySubscription;
use crate::session::{OutboundWindow, Route, Stage, Subscriptions};
use crate::session_state;

/// Whom a cursor's records are for.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The session's plain subscriptions, reading the partition with this id.
    Plain { subscriptions: &'a Subscriptions, partition_id: u32 },
    /// One `$stream` subscription.
    Replay(&'a ReplaySubscription),
}

/// What one cursor's records are planned against; made afresh for each record (it borrows
/// the window, which the shell changes as it sends).
pub(crate) struct CursorContext<'a> {
    pub(crate) target: Target<'a>,
    /// The session's client id: a message it published is not sent back to a No Local
    /// subscription.
    pub(crate) client_id: &'a [u8],
    pub(crate) window: &'a OutboundWindow,
    /// A resumed session had read up to here: below it only what was in flight goes out,
    /// again (see `readers::Cursor::redeliver_below`).
    pub(crate) redeliver_below: u64,
    pub(crate) now_ms: i64,
}

/// What to do with the record at the front of a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Move past it without sending: not an MQTT message, no subscription wants it, or a
    /// redelivery of what was acknowledged (or not in flight) before the resume. `forget`:
    /// the packet identifier the window held for it, now free.
    Skip { forget: Option<PacketId> },
    /// It needs a slot in the window and there is none: stop here, it stays read ahead.
    WindowFull,
    /// Its Message Expiry Interval has passed: move past it; `forget` as for `Skip`.
    Expired { forget: Option<PacketId> },
    /// Send it with `route` and the Message Expiry Interval left (`None`: no expiry).
    /// `resend`: the packet identifier it keeps, resent with DUP set after a resume; the
    /// window holds it already.
    Send { route: Route, expiry: Option<u32>, resend: Option<PacketId> },
}

/// Plans the record at `offset` (`message`: `None` when it is not an MQTT message). Takes
/// its identifier out of `resend` when it is one a resumed session had in flight.
pub(crate) fn plan_record(
    context: &CursorContext<'_>,
    offset: u64,
    message: Option<&StoredMessage>,
    resend: &mut HashMap<u64, PacketId>,
) -> Step {
    // Below where the resumed session had read, only what was in flight goes out again; the
    // rest was acknowledged (or was QoS 0, or not wanted).
    let redelivery = session_state::is_redelivery(offset, context.redeliver_below);
    let resend_id = if redelivery { resend.remove(&offset) } else { None };
    let forget = resend_id;
    let route = match message {
        None => None,
        Some(_) if redelivery && resend_id.is_none() => None,
        Some(message) => {
            let from_self = message.client_id == context.client_id;
            match context.target {
                Target::Plain { subscriptions, partition_id } => subscriptions.route_at(
                    &message.topic,
                    message.qos,
                    message.retain,
                    from_self,
                    Some((partition_id, offset)),
                ),
                Target::Replay(replay) => replay.route(&message.topic, message.qos, message.retain, from_self),
            }
        }
    };
    // A resent message keeps the QoS it first went out with.
    let route = match (route, resend_id.map(|id| context.window.stage(id))) {
        (Some(route), Some(Some(stage))) => resent_qos(stage).map(|qos| Route { qos, ..route }),
        (route, None) => route,
        // Acknowledged meanwhile, or no longer wanted.
        (_, Some(_)) => None,
    };
    let (Some(route), Some(message)) = (route, message) else { return Step::Skip { forget } };
    if resend_id.is_none() && !may_send(route.qos, context.window) {
        return Step::WindowFull;
    }
    match record::remaining_expiry(message.expires_at, context.now_ms) {
        Ok(expiry) => Step::Send { route, expiry, resend: resend_id },
        Err(record::Expired) => Step::Expired { forget },
    }
}

/// The QoS a message in flight at `stage` goes out with again: `None` once only its PUBCOMP
/// is awaited (its PUBREL is what is resent).
pub(crate) fn resent_qos(stage: Stage) -> Option<QoS> {
    match stage {
        Stage::AwaitPubAck => Some(QoS::AtLeastOnce),
        Stage::AwaitPubRec => Some(QoS::ExactlyOnce),
        Stage::AwaitPubComp => None,
    }
}

/// Whether a new message at `qos` may go out now: QoS 0 always, QoS 1 and 2 when the window
/// (the client's Receive Maximum) has room.
pub(crate) fn may_send(qos: QoS, window: &OutboundWindow) -> bool {
    qos == QoS::AtMostOnce || window.has_room()
}

/// Whether a cursor has passed every offset a resumed session had read: the identifiers
/// still waiting to be resent below it were removed by retention and are forgotten.
pub(crate) fn redelivery_over(next: u64, redeliver_below: u64) -> bool {
    next >= redeliver_below
}

/// How far a live reader that can only lose QoS 0 messages may lag: `qos0_max_lag` for the
/// plain subscriptions when none of them is above QoS 0; never for a replay (it asked for
/// every record) nor when a QoS 1 or 2 subscription would lose what it was promised.
pub(crate) fn qos0_max_lag(replay: bool, max_qos: QoS, configured: Option<u64>) -> Option<u64> {
    match (replay, max_qos) {
        (false, QoS::AtMostOnce) => configured,
        _ => None,
    }
}

/// Where a reader at `next` that lags more than `max_lag` behind the `high_watermark` skips
/// to, if it must: keeping the newest half of the allowed lag, so that the freshest
/// messages go out and the next skip is not one fetch away. Never while it redelivers.
pub(crate) fn qos0_skip_to(next: u64, high_watermark: u64, max_lag: u64, redeliver_below: u64) -> Option<u64> {
    (high_watermark.saturating_sub(next) > max_lag && next >= redeliver_below).then(|| high_watermark - max_lag / 2)
}

/// What a resumed session does with one message it had in flight (`session_state::InFlight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumeInFlight {
    /// Its PUBREC had come: PUBREL goes out again, and the window holds it until PUBCOMP.
    SendPubRel,
    /// Its reader reaches it again below where it had read: the window holds it at this
    /// (cursor key, offset), and the cursor resends it ([`plan_record`]).
    AwaitReader((u32, u64)),
    /// A retained message, at this offset in `$retained`: sent again now if it is still its
    /// topic's retained message and still wanted.
    ResendRetained(u64),
    /// A consumer group's message, or one whose reader is gone: the group hands it to a
    /// member again, or nothing does.
    Drop,
}

/// Plans one in-flight message of a resumed session at `stage`. `position`: the (cursor key,
/// offset) of the reader that read it, if that reader still runs; `retained_offset`: its
/// offset in `$retained` for a retained message.
pub(crate) fn resume_in_flight(
    stage: Stage,
    position: Option<(u32, u64)>,
    retained_offset: Option<u64>,
) -> ResumeInFlight {
    match (stage, position, retained_offset) {
        (Stage::AwaitPubComp, _, _) => ResumeInFlight::SendPubRel,
        (_, Some(position), _) => ResumeInFlight::AwaitReader(position),
        (_, None, Some(offset)) => ResumeInFlight::ResendRetained(offset),
        (_, None, None) => ResumeInFlight::Drop,
    }
}

/// Whether a resumed in-flight message at `stage` is one its reader sends again (with DUP,
/// under its identifier): all but those whose PUBREC came, for which only PUBREL goes again.
pub(crate) fn resent_by_reader(stage: Stage) -> bool {
    resent_qos(stage).is_some()
}

/// What to do with a message a consumer group handed to this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupStep {
    /// Expired: acknowledged to the group without sending.
    Expired,
    /// Send with `route`, the expiry left, and DUP when the group hands it out again.
    Send { route: Route, expiry: Option<u32>, dup: bool },
}

/// Plans a group's message for a member subscribed with `options` and `identifier`.
pub(crate) fn plan_group(
    options: SubscriptionOptions,
    identifier: Option<u32>,
    message: &StoredMessage,
    redelivery: bool,
    now_ms: i64,
) -> GroupStep {
    let route = Route {
        qos: options.qos.min(message.qos),
        retain: message.retain && options.retain_as_published,
        identifiers: identifier.into_iter().collect(),
    };
    let Ok(expiry) = record::remaining_expiry(message.expires_at, now_ms) else { return GroupStep::Expired };
    let dup = route.qos != QoS::AtMostOnce && redelivery;
    GroupStep::Send { route, expiry, dup }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::{Properties, RetainHandling};

    const NOW: i64 = 1_700_000_000_000;
    const ME: &[u8] = b"me";

    fn message(topic: &str, qos: QoS, from: &[u8]) -> StoredMessage {
        StoredMessage {
            offset: 0,
            topic: topic.into(),
            qos,
            retain: false,
            client_id: Bytes::copy_from_slice(from),
            properties: Properties::default(),
            expires_at: None,
            payload: Bytes::from_static(b"x"),
        }
    }

    fn options(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    fn subscriptions(filter: &str, options: SubscriptionOptions, identifier: Option<u32>) -> Subscriptions {
        let mut subscriptions = Subscriptions::default();
        subscriptions.subscribe(filter, options, identifier);
        subscriptions
    }

    fn context<'a>(subscriptions: &'a Subscriptions, window: &'a OutboundWindow) -> CursorContext<'a> {
        CursorContext {
            target: Target::Plain { subscriptions, partition_id: 0 },
            client_id: ME,
            window,
            redeliver_below: 0,
            now_ms: NOW,
        }
    }

    fn plan(context: &CursorContext<'_>, offset: u64, message: Option<&StoredMessage>) -> Step {
        plan_record(context, offset, message, &mut HashMap::new())
    }

    fn send(qos: QoS) -> Step {
        Step::Send { route: Route { qos, retain: false, identifiers: Vec::new() }, expiry: None, resend: None }
    }

    fn full_window() -> OutboundWindow {
        let mut window = OutboundWindow::new(1);
        window.start(QoS::AtLeastOnce, Some((0, 0)));
        window
    }

    #[test]
    fn a_matching_message_is_sent_at_the_lower_of_the_two_qos() {
        let subscriptions = subscriptions("a/+", options(QoS::AtLeastOnce), None);
        let window = OutboundWindow::new(4);
        let context = context(&subscriptions, &window);
        assert_eq!(plan(&context, 5, Some(&message("a/b", QoS::ExactlyOnce, b"other"))), send(QoS::AtLeastOnce));
        assert_eq!(plan(&context, 6, Some(&message("a/b", QoS::AtMostOnce, b"other"))), send(QoS::AtMostOnce));
    }

    #[test]
    fn what_no_subscription_wants_or_is_not_a_message_is_skipped() {
        let subscriptions = subscriptions("a/+", options(QoS::AtLeastOnce), None);
        let window = OutboundWindow::new(4);
        let context = context(&subscriptions, &window);
        assert_eq!(plan(&context, 5, Some(&message("b/c", QoS::AtLeastOnce, b"other"))), Step::Skip { forget: None });
        assert_eq!(plan(&context, 5, None), Step::Skip { forget: None });
    }

    #[test]
    fn a_full_window_stops_qos1_and_2_but_not_qos0() {
        let subscriptions = subscriptions("#", options(QoS::ExactlyOnce), None);
        let window = full_window();
        let context = context(&subscriptions, &window);
        assert_eq!(plan(&context, 5, Some(&message("t", QoS::AtLeastOnce, b"other"))), Step::WindowFull);
        assert_eq!(plan(&context, 5, Some(&message("t", QoS::ExactlyOnce, b"other"))), Step::WindowFull);
        assert_eq!(plan(&context, 5, Some(&message("t", QoS::AtMostOnce, b"other"))), send(QoS::AtMostOnce));
        // Not wanted: skipped even when the window is full (it needs no slot).
        assert_eq!(plan(&context, 5, Some(&message("$x", QoS::AtLeastOnce, b"other"))), Step::Skip { forget: None });
    }

    #[test]
    fn an_expired_message_is_skipped_and_a_live_one_carries_what_is_left() {
        let subscriptions = subscriptions("#", options(QoS::AtLeastOnce), None);
        let window = OutboundWindow::new(4);
        let context = context(&subscriptions, &window);
        let mut expired = message("t", QoS::AtLeastOnce, b"other");
        expired.expires_at = Some(NOW);
        assert_eq!(plan(&context, 5, Some(&expired)), Step::Expired { forget: None });
        let mut live = expired.clone();
        live.expires_at = Some(NOW + 1_500);
        let Step::Send { expiry, .. } = plan(&context, 5, Some(&live)) else { panic!("not sent") };
        assert_eq!(expiry, Some(2), "rounded up to whole seconds");
    }

    #[test]
    fn a_full_window_is_seen_before_the_expiry() {
        // The record stays read ahead; its expiry is looked at when there is room.
        let subscriptions = subscriptions("#", options(QoS::AtLeastOnce), None);
        let window = full_window();
        let context = context(&subscriptions, &window);
        let mut expired = message("t", QoS::AtLeastOnce, b"other");
        expired.expires_at = Some(NOW - 1);
        assert_eq!(plan(&context, 5, Some(&expired)), Step::WindowFull);
    }

    #[test]
    fn no_local_skips_the_session_own_messages_only() {
        let no_local = SubscriptionOptions { no_local: true, ..options(QoS::AtLeastOnce) };
        let subscriptions = subscriptions("#", no_local, None);
        let window = OutboundWindow::new(4);
        let context = context(&subscriptions, &window);
        assert_eq!(plan(&context, 5, Some(&message("t", QoS::AtLeastOnce, ME))), Step::Skip { forget: None });
        assert_eq!(plan(&context, 5, Some(&message("t", QoS::AtLeastOnce, b"other"))), send(QoS::AtLeastOnce));
        // Without No Local, its own messages come back.
        let plain = self::subscriptions("#", options(QoS::AtLeastOnce), None);
        assert_eq!(
            plan(&self::context(&plain, &window), 5, Some(&message("t", QoS::AtLeastOnce, ME))),
            send(QoS::AtLeastOnce)
        );
    }

    #[test]
    fn retain_as_published_and_subscription_identifiers_shape_the_route() {
        let keep = SubscriptionOptions { retain_as_published: true, ..options(QoS::AtLeastOnce) };
        let mut subscriptions = subscriptions("a/#", keep, Some(7));
        subscriptions.subscribe("a/b", options(QoS::AtMostOnce), Some(9));
        let window = OutboundWindow::new(4);
        let context = context(&subscriptions, &window);
        let mut retained = message("a/b", QoS::AtLeastOnce, b"other");
        retained.retain = true;
        let route = Route { qos: QoS::AtLeastOnce, retain: true, identifiers: vec![7, 9] };
        assert_eq!(plan(&context, 5, Some(&retained)), Step::Send { route, expiry: None, resend: None });
        // Without Retain As Published, RETAIN is cleared.
        let plain = self::subscriptions("a/#", options(QoS::AtLeastOnce), None);
        let Step::Send { route, .. } = plan(&self::context(&plain, &window), 5, Some(&retained)) else {
            panic!("not sent")
        };
        assert!(!route.retain);
    }

    #[test]
    fn a_subscription_made_after_the_record_does_not_take_it() {
        let mut subscriptions = Subscriptions::default();
        subscriptions.subscribe_since("#", options(QoS::AtLeastOnce), None, vec![(0, 10)]);
        let window = OutboundWindow::new(4);
        let context = context(&subscriptions, &window);
        assert_eq!(plan(&context, 9, Some(&message("t", QoS::AtLeastOnce, b"o"))), Step::Skip { forget: None });
        assert_eq!(plan(&context, 10, Some(&message("t", QoS::AtLeastOnce, b"o"))), send(QoS::AtLeastOnce));
    }

    #[test]
    fn a_replay_routes_by_its_own_filter_and_options() {
        let replay = ReplaySubscription {
            subscribed_as: "$stream/s/a/#".into(),
            stream: "s".into(),
            filter: "a/#".into(),
            options: options(QoS::AtLeastOnce),
            identifier: Some(3),
            compaction_key: None,
        };
        let window = OutboundWindow::new(4);
        let context = CursorContext {
            target: Target::Replay(&replay),
            client_id: ME,
            window: &window,
            redeliver_below: 0,
            now_ms: NOW,
        };
        let route = Route { qos: QoS::AtLeastOnce, retain: false, identifiers: vec![3] };
        let step = plan(&context, 0, Some(&message("a/b", QoS::ExactlyOnce, b"o")));
        assert_eq!(step, Step::Send { route, expiry: None, resend: None });
        assert_eq!(plan(&context, 1, Some(&message("b", QoS::AtLeastOnce, b"o"))), Step::Skip { forget: None });
    }

    // Redelivery after a reconnect: below `redeliver_below`, only the resumed in-flight
    // messages go out, under their identifiers, whatever room the window has.

    fn resumed_window(stage: Stage) -> (OutboundWindow, PacketId) {
        let mut window = OutboundWindow::new(1);
        let id = PacketId::new(42).expect("non-zero");
        window.restore(id, stage, Some((0, 3)));
        (window, id)
    }

    #[test]
    fn below_the_resume_point_what_was_not_in_flight_is_skipped() {
        let subscriptions = subscriptions("#", options(QoS::AtLeastOnce), None);
        let window = OutboundWindow::new(4);
        let context = CursorContext { redeliver_below: 10, ..context(&subscriptions, &window) };
        let mut resend = HashMap::new();
        let step = plan_record(&context, 4, Some(&message("t", QoS::AtLeastOnce, b"o")), &mut resend);
        assert_eq!(step, Step::Skip { forget: None });
        // At the resume point, delivery is as usual.
        assert_eq!(plan(&context, 10, Some(&message("t", QoS::AtLeastOnce, b"o"))), send(QoS::AtLeastOnce));
    }

    #[test]
    fn an_in_flight_message_is_resent_under_its_identifier_at_its_first_qos_in_a_full_window() {
        let subscriptions = subscriptions("#", options(QoS::ExactlyOnce), None);
        for (stage, qos) in [(Stage::AwaitPubAck, QoS::AtLeastOnce), (Stage::AwaitPubRec, QoS::ExactlyOnce)] {
            let (window, id) = resumed_window(stage);
            assert!(!window.has_room());
            let context = CursorContext { redeliver_below: 10, ..context(&subscriptions, &window) };
            let mut resend = HashMap::from([(3, id)]);
            let step = plan_record(&context, 3, Some(&message("t", QoS::ExactlyOnce, b"o")), &mut resend);
            let route = Route { qos, retain: false, identifiers: Vec::new() };
            assert_eq!(step, Step::Send { route, expiry: None, resend: Some(id) });
            assert!(resend.is_empty(), "taken out of the resend map");
        }
    }

    #[test]
    fn a_resent_message_acknowledged_or_no_longer_wanted_frees_its_identifier() {
        let subscriptions = subscriptions("#", options(QoS::AtLeastOnce), None);
        // Its PUBREC came: only the PUBREL goes again, not the message.
        let (window, id) = resumed_window(Stage::AwaitPubComp);
        let context = CursorContext { redeliver_below: 10, ..context(&subscriptions, &window) };
        let mut resend = HashMap::from([(3, id)]);
        let step = plan_record(&context, 3, Some(&message("t", QoS::AtLeastOnce, b"o")), &mut resend);
        assert_eq!(step, Step::Skip { forget: Some(id) });
        // Acknowledged since: the window no longer holds it.
        let window = OutboundWindow::new(1);
        let context = CursorContext { redeliver_below: 10, ..self::context(&subscriptions, &window) };
        let mut resend = HashMap::from([(3, id)]);
        let step = plan_record(&context, 3, Some(&message("t", QoS::AtLeastOnce, b"o")), &mut resend);
        assert_eq!(step, Step::Skip { forget: Some(id) });
        // Unsubscribed since.
        let (window, id) = resumed_window(Stage::AwaitPubAck);
        let other = self::subscriptions("other", options(QoS::AtLeastOnce), None);
        let context = CursorContext { redeliver_below: 10, ..self::context(&other, &window) };
        let mut resend = HashMap::from([(3, id)]);
        let step = plan_record(&context, 3, Some(&message("t", QoS::AtLeastOnce, b"o")), &mut resend);
        assert_eq!(step, Step::Skip { forget: Some(id) });
        // No longer a message it can read.
        let mut resend = HashMap::from([(3, id)]);
        assert_eq!(plan_record(&context, 3, None, &mut resend), Step::Skip { forget: Some(id) });
    }

    #[test]
    fn a_resent_message_that_expired_frees_its_identifier() {
        let subscriptions = subscriptions("#", options(QoS::AtLeastOnce), None);
        let (window, id) = resumed_window(Stage::AwaitPubAck);
        let context = CursorContext { redeliver_below: 10, ..context(&subscriptions, &window) };
        let mut expired = message("t", QoS::AtLeastOnce, b"o");
        expired.expires_at = Some(NOW - 1);
        let mut resend = HashMap::from([(3, id)]);
        assert_eq!(plan_record(&context, 3, Some(&expired), &mut resend), Step::Expired { forget: Some(id) });
    }

    #[test]
    fn a_resumed_in_flight_message_waits_for_its_reader_or_is_resent_or_released() {
        for stage in [Stage::AwaitPubAck, Stage::AwaitPubRec] {
            assert_eq!(resume_in_flight(stage, Some((2, 7)), None), ResumeInFlight::AwaitReader((2, 7)));
            assert_eq!(resume_in_flight(stage, None, Some(11)), ResumeInFlight::ResendRetained(11));
            assert_eq!(resume_in_flight(stage, None, None), ResumeInFlight::Drop);
            assert!(resent_by_reader(stage));
        }
        // PUBREC came: PUBREL again, wherever the message came from.
        for (position, retained) in [(Some((2, 7)), None), (None, Some(11)), (None, None)] {
            assert_eq!(resume_in_flight(Stage::AwaitPubComp, position, retained), ResumeInFlight::SendPubRel);
        }
        assert!(!resent_by_reader(Stage::AwaitPubComp));
    }

    #[test]
    fn resent_qos_follows_the_stage() {
        assert_eq!(resent_qos(Stage::AwaitPubAck), Some(QoS::AtLeastOnce));
        assert_eq!(resent_qos(Stage::AwaitPubRec), Some(QoS::ExactlyOnce));
        assert_eq!(resent_qos(Stage::AwaitPubComp), None);
    }

    #[test]
    fn redelivery_is_over_at_the_resume_point() {
        assert!(!redelivery_over(9, 10));
        assert!(redelivery_over(10, 10));
        assert!(redelivery_over(0, 0));
    }

    #[test]
    fn may_send_needs_room_for_qos1_and_2_only() {
        let full = full_window();
        assert!(may_send(QoS::AtMostOnce, &full));
        assert!(!may_send(QoS::AtLeastOnce, &full));
        assert!(!may_send(QoS::ExactlyOnce, &full));
        let room = OutboundWindow::new(2);
        assert!(may_send(QoS::AtLeastOnce, &room));
    }

    // A QoS 0 reader that lags may skip ahead.

    #[test]
    fn only_a_plain_qos0_reader_may_skip() {
        assert_eq!(qos0_max_lag(false, QoS::AtMostOnce, Some(100)), Some(100));
        assert_eq!(qos0_max_lag(false, QoS::AtLeastOnce, Some(100)), None);
        assert_eq!(qos0_max_lag(true, QoS::AtMostOnce, Some(100)), None);
        assert_eq!(qos0_max_lag(false, QoS::AtMostOnce, None), None);
    }

    #[test]
    fn a_lagging_qos0_reader_skips_to_half_the_allowed_lag() {
        assert_eq!(qos0_skip_to(0, 1_000, 100, 0), Some(950));
        // Within the lag, or exactly at it: no skip.
        assert_eq!(qos0_skip_to(900, 1_000, 100, 0), None);
        assert_eq!(qos0_skip_to(950, 1_000, 100, 0), None);
        // Never while resending what a resumed session had in flight.
        assert_eq!(qos0_skip_to(0, 1_000, 100, 5), None);
        // A reader past the high watermark (it moved back) does not skip.
        assert_eq!(qos0_skip_to(2_000, 1_000, 100, 0), None);
    }

    // Consumer groups.

    #[test]
    fn a_group_message_follows_the_member_options() {
        let keep = SubscriptionOptions { retain_as_published: true, ..options(QoS::AtLeastOnce) };
        let mut retained = message("t", QoS::ExactlyOnce, b"o");
        retained.retain = true;
        let route = Route { qos: QoS::AtLeastOnce, retain: true, identifiers: vec![4] };
        assert_eq!(
            plan_group(keep, Some(4), &retained, false, NOW),
            GroupStep::Send { route: route.clone(), expiry: None, dup: false }
        );
        // Handed out again: DUP, except at QoS 0 which has none.
        assert_eq!(plan_group(keep, Some(4), &retained, true, NOW), GroupStep::Send { route, expiry: None, dup: true });
        let at_most_once = plan_group(options(QoS::AtMostOnce), None, &retained, true, NOW);
        let GroupStep::Send { dup, .. } = at_most_once else { panic!("not sent: {at_most_once:?}") };
        assert!(!dup);
        let mut expired = retained;
        expired.expires_at = Some(NOW);
        assert_eq!(plan_group(keep, None, &expired, false, NOW), GroupStep::Expired);
    }
}
