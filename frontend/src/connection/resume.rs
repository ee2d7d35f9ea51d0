//! A persistent session's record: the outbound half's state as written to `$sessions`, and
//! taking a stored one up again.

use std::collections::HashMap;

use crate::codec::{Ack, Packet, PacketId};
use crate::readers;
use crate::replay;
use crate::session_core::delivery::{ResumeInFlight, resent_by_reader, resume_in_flight};
use crate::session_state::{self, SessionState};
use crate::topic;

use super::lock;
use super::outbound::Outbound;
use super::subscribe::may_subscribe;

impl Outbound {
    /// The session as it stands, for `$sessions`; `disconnected_at_ms` 0 while connected.
    pub(super) fn state(&self, expiry_interval: u32, disconnected_at_ms: i64) -> SessionState {
        let positions = self.readers.positions(&self.window);
        let stored = |filter: &str, options, identifier| session_state::StoredSubscription {
            filter: filter.to_owned(),
            options,
            identifier,
        };
        let mut subscriptions: Vec<_> = self
            .subscriptions
            .entries()
            .map(|(filter, options, identifier)| stored(filter, options, identifier))
            .collect();
        subscriptions.extend(self.memberships.iter().map(|m| stored(&m.subscribed_as, m.options, m.identifier)));
        for replay in self.readers.cursors.iter().filter_map(|c| c.replay.as_ref()) {
            if !subscriptions.iter().any(|s| s.filter == replay.subscribed_as) {
                subscriptions.push(stored(&replay.subscribed_as, replay.options, replay.identifier));
            }
        }
        // Positions are in cursor order, so a cursor's index is its position's index.
        let index_of = |key: u32| self.readers.cursors.iter().position(|c| c.key == key);
        let in_flight = self
            .window
            .in_flight()
            .into_iter()
            .map(|(packet_id, stage, position)| match position {
                Some((readers::RETAINED_KEY, offset)) => {
                    session_state::InFlight { packet_id, stage, position: None, retained_offset: Some(offset) }
                }
                _ => session_state::InFlight {
                    packet_id,
                    stage,
                    position: position.and_then(|(key, offset)| Some((u16::try_from(index_of(key)?).ok()?, offset))),
                    retained_offset: None,
                },
            })
            .collect();
        SessionState {
            expiry_interval,
            disconnected_at_ms,
            subscriptions,
            positions,
            qos2_awaiting_pubrel: lock(&self.qos2).pending_ids(),
            in_flight,
            will: None,
            owner: session_state::Owner::User(self.user.clone()),
        }
    }

    /// Takes up a stored session: its subscriptions (plain, `$share` and `$stream`), each
    /// reader where it stood, and its messages in flight under their packet identifiers.
    /// PUBREL goes out again for those whose PUBREC had arrived.
    /// The stored subscriptions the ACL no longer lets this client read (another user, or
    /// another ACL file since) are dropped (issue 22).
    pub(super) fn resume(&mut self, session: &SessionState, permissions: &crate::acl::Permissions) {
        lock(&self.qos2).restore(&session.qos2_awaiting_pubrel);
        let mut resumed: Vec<readers::Resumed> = session
            .positions
            .iter()
            .map(|position| readers::Resumed { position: position.clone(), resend: HashMap::new() })
            .collect();
        for entry in &session.in_flight {
            // An index past the positions (never in a decoded record) points at nothing.
            if let (Some((index, offset)), Some(id), false) =
                (entry.position, PacketId::new(entry.packet_id), !resent_by_reader(entry.stage))
                && let Some(resumed) = resumed.get_mut(usize::from(index))
            {
                resumed.resend.insert(offset, id);
            }
        }
        let limits = self.shared.config.limits.topics();
        for subscription in &session.subscriptions {
            let (filter, options, identifier) = (&subscription.filter, subscription.options, subscription.identifier);
            let parsed = topic::parse_subscription(filter, &limits);
            if let Ok(parsed) = &parsed
                && !may_subscribe(&self.shared, permissions, parsed, &[])
            {
                self.shared.metrics.acl_denied(false);
                tracing::warn!(client_id = %self.client_id, filter, "resumed subscription dropped: not authorized");
                // A replay's stored positions go with it.
                resumed.retain(|r| r.position.subscription.as_ref() != Some(filter));
                self.subscriptions_changed = true;
                continue;
            }
            match parsed {
                Ok(topic::Subscription::Plain(plain)) => {
                    self.follow_sys_if_needed(plain);
                    // Before the cursors read the high watermark (`interest.rs`).
                    self.interest.add(plain);
                    self.subscriptions.subscribe(plain, options, identifier);
                }
                Ok(topic::Subscription::Shared { group, filter: inner }) => {
                    if let Err(why) = self.join_group(filter, group, inner, options, identifier, &[]) {
                        tracing::warn!(client_id = %self.client_id, filter, why, "resumed session left a group");
                    }
                }
                Ok(topic::Subscription::Stream { stream, filter: inner }) => {
                    let mut starts = Vec::new();
                    while let Some(i) = resumed.iter().position(|r| r.position.subscription.as_ref() == Some(filter)) {
                        let start = resumed.swap_remove(i);
                        let partition =
                            self.shared.streams.get(stream).and_then(|s| {
                                s.partitions.iter().find(|p| p.number == start.position.partition).cloned()
                            });
                        if let Some(partition) = partition {
                            starts.push((partition, readers::ReplayStart::Resumed(start)));
                        }
                    }
                    match replay::parse_request(stream, inner, &[]) {
                        Ok(request) => {
                            let subscription = replay::ReplaySubscription {
                                subscribed_as: filter.clone(),
                                compaction_key: self.shared.streams.get(stream).and_then(|s| s.compaction_key.clone()),
                                stream: request.stream,
                                filter: request.filter,
                                options,
                                identifier,
                            };
                            self.readers.add_replay(subscription, starts);
                        }
                        Err(why) => tracing::warn!(client_id = %self.client_id, filter, why, "replay not resumed"),
                    }
                }
                Err(_) => tracing::warn!(client_id = %self.client_id, filter, "stored filter no longer valid"),
            }
        }
        if !self.subscriptions.is_empty() {
            // A partition the session never saw (a stream added since) starts at its end.
            self.readers.follow_all(&self.shared.streams, &mut resumed);
        }
        for entry in &session.in_flight {
            let Some(id) = PacketId::new(entry.packet_id) else { continue };
            let position = entry.position.and_then(|(index, offset)| {
                Some((self.readers.key_of(session.positions.get(usize::from(index))?)?, offset))
            });
            match resume_in_flight(entry.stage, position, entry.retained_offset) {
                ResumeInFlight::SendPubRel => {
                    self.window.restore(id, entry.stage, position);
                    self.queue(&Packet::PubRel(Ack::success(id)));
                }
                ResumeInFlight::AwaitReader(position) => self.window.restore(id, entry.stage, Some(position)),
                ResumeInFlight::ResendRetained(offset) => self.resend_retained(id, entry.stage, offset),
                // A group's message: the group hands it to a member again.
                ResumeInFlight::Drop => {}
            }
        }
        // The stored record may hold a will this connection cancelled, and the new session
        // starts with a write of its own.
        self.subscriptions_changed = true;
    }
}
