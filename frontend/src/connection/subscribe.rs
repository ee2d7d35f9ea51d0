//! Subscriptions as the outbound half takes them up: plain filters, consumer groups
//! (`$share/`) and replays (`$stream/`), each checked against the ACL.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::codec::{self, Packet, Properties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe};
use crate::groups::{Group, GroupDelivery, MemberId};
use crate::readers;
use crate::replay;
use crate::session::Route;
use crate::shared::Shared;
use crate::topic;

use super::outbound::Outbound;

/// Whether the ACL lets a client read what `subscription` would deliver (issue 22): a plain
/// filter, or a `$share` group's filter, must be readable throughout. A `$stream` replay
/// delivers the stream's topics that match its filter: either that filter, or every topic
/// filter of the stream, must be readable (the default stream, and a stream with no topic
/// filters, may hold any topic: `#`). `user_properties` are the SUBSCRIBE's (the replay's
/// start).
pub(super) fn may_subscribe(
    shared: &Shared,
    permissions: &crate::acl::Permissions,
    subscription: &topic::Subscription<'_>,
    user_properties: &[(codec::ByteString, codec::ByteString)],
) -> bool {
    match *subscription {
        topic::Subscription::Plain(filter) | topic::Subscription::Shared { filter, .. } => {
            permissions.may_read_filter(filter)
        }
        topic::Subscription::Stream { stream, filter } => {
            // A request that does not parse is refused later with its own reason.
            let Ok(request) = replay::parse_request(stream, filter, user_properties) else {
                return true;
            };
            if permissions.may_read_filter(&request.filter) {
                return true;
            }
            match shared.streams.get(stream) {
                Some(stream) if stream.name != crate::DEFAULT_STREAM && !stream.topics.is_empty() => {
                    stream.topics.iter().all(|topics| permissions.may_read_filter(topics))
                }
                Some(_) => permissions.may_read_filter("#"),
                // Unknown: not authorized, which does not tell whether it exists.
                None => false,
            }
        }
    }
}

/// This connection's membership of one consumer group.
pub(super) struct Membership {
    /// The filter exactly as subscribed (`$share/<group>/<filter>`), for UNSUBSCRIBE.
    pub(super) subscribed_as: String,
    pub(super) group: Arc<Group>,
    pub(super) member: MemberId,
    /// The messages the group handed to this member, bounded by its window.
    pub(super) queue: mpsc::Receiver<GroupDelivery>,
    pub(super) options: codec::SubscriptionOptions,
    pub(super) identifier: Option<u32>,
}

/// The next message any group handed to this connection, with the membership's index.
pub(super) async fn next_group_delivery(memberships: &mut [Membership]) -> (usize, GroupDelivery) {
    std::future::poll_fn(|cx| {
        for (index, membership) in memberships.iter_mut().enumerate() {
            if let std::task::Poll::Ready(Some(delivery)) = membership.queue.poll_recv(cx) {
                return std::task::Poll::Ready((index, delivery));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

impl Outbound {
    /// Joins the group of `$share/<group>/<filter>` (or updates the options of this
    /// connection's membership), or says why not. A group made now starts at `since`
    /// (partition id, offset) where it lists the partition, else at its end.
    pub(super) fn join_group(
        &mut self,
        subscribed_as: &str,
        group: &str,
        filter: &str,
        options: codec::SubscriptionOptions,
        identifier: Option<u32>,
        since: &[(u32, u64)],
    ) -> Result<(), String> {
        if let Some(existing) = self.memberships.iter_mut().find(|m| m.subscribed_as == subscribed_as) {
            existing.options = options;
            existing.identifier = identifier;
            return Ok(());
        }
        let group = self.shared.group(group, filter, since)?;
        let member = self.shared.next_member_id();
        let queue = group.join(member, self.window.capacity());
        self.memberships.push(Membership {
            subscribed_as: subscribed_as.to_owned(),
            group,
            member,
            queue,
            options,
            identifier,
        });
        Ok(())
    }

    /// Every filter this session holds, as subscribed: plain, `$share` and `$stream`.
    pub(super) fn subscribed_filters(&self) -> HashSet<String> {
        let plain = self.subscriptions.entries().map(|(filter, _, _)| filter);
        let groups = self.memberships.iter().map(|m| m.subscribed_as.as_str());
        let replays = self.readers.cursors.iter().filter_map(|c| c.replay.as_ref().map(|r| r.subscribed_as.as_str()));
        plain.chain(groups).chain(replays).map(str::to_owned).collect()
    }

    /// Leaves the group subscribed as `filter`; returns whether there was one.
    pub(super) fn leave_group(&mut self, filter: &str) -> bool {
        let Some(index) = self.memberships.iter().position(|m| m.subscribed_as == filter) else { return false };
        let membership = self.memberships.remove(index);
        membership.group.leave(membership.member);
        true
    }

    /// Leaves every group and commits their offsets durably (at disconnect).
    pub(super) async fn leave_groups(&mut self) {
        for membership in std::mem::take(&mut self.memberships) {
            membership.group.leave(membership.member);
            membership.group.commit(true).await;
        }
    }

    /// Starts taking `$SYS` refreshes when `filter` can match a `$SYS` topic: only a filter
    /// whose first level is `$SYS` can (MQTT-4.7.2-1). Connections that never ask for them
    /// do not wait on the channel at all.
    pub(super) fn follow_sys_if_needed(&mut self, filter: &str) {
        if self.sys_updates.is_none() && filter.split('/').next() == Some("$SYS") {
            self.sys_updates = Some(self.shared.sys.subscribe());
        }
    }

    /// `since`: each partition's high watermark when the inbound half read the SUBSCRIBE;
    /// `refused`: the filters the ACL refuses, answered 0x87 (0x80 for MQTT 3.1.1).
    pub(super) fn subscribe(&mut self, subscribe: Subscribe, since: Vec<(u32, u64)>, refused: &[bool]) {
        let identifier = subscribe.properties.subscription_identifiers.first().copied();
        let limits = self.shared.config.limits.topics();
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut refusals = Vec::new();
        // Issue 22: a new filter beyond `max_subscriptions_per_client` is refused; one held
        // already is replaced in place and takes no more room.
        let max_subscriptions = self.shared.config.limits.max_subscriptions_per_client;
        let mut held = max_subscriptions.map(|_| self.subscribed_filters()).unwrap_or_default();
        for (index, filter) in subscribe.filters.iter().enumerate() {
            let over_quota = max_subscriptions.is_some_and(|max| !held.contains(&*filter.filter) && held.len() >= max);
            let code = match topic::parse_subscription(&filter.filter, &limits) {
                Ok(_) if refused.get(index).copied().unwrap_or(false) => {
                    refusals.push(format!("{}: not authorized", filter.filter));
                    ReasonCode::NotAuthorized
                }
                Ok(_) if over_quota => {
                    // The inbound half put a plain filter in the interest tree as it decoded it.
                    self.interest.remove(&filter.filter);
                    refusals.push(format!("{}: max_subscriptions_per_client reached", filter.filter));
                    ReasonCode::QuotaExceeded
                }
                Ok(topic::Subscription::Plain(plain)) => {
                    // Before the latest values are taken below, so that no refresh is missed.
                    self.follow_sys_if_needed(plain);
                    // Again: an UNSUBSCRIBE read after this SUBSCRIBE's filters went in may have
                    // taken them out. Then appends on it went unreported for a while, and no
                    // cursor may jump over them: each reads on from where it stands instead.
                    if self.interest.add(plain) {
                        for cursor in self.readers.cursors.iter_mut().filter(|c| c.replay.is_none()) {
                            cursor.reached_end = false;
                        }
                    }
                    // From where the partitions ended when the SUBSCRIBE was read: a cursor
                    // still behind does not hand the new subscription older messages.
                    let existed = self.subscriptions.subscribe_since(plain, filter.options, identifier, since.clone());
                    let send_retained = match filter.options.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendAtSubscribeIfNew => !existed,
                        RetainHandling::DoNotSend => false,
                    };
                    if send_retained {
                        // Sent after the SUBACK (queued below), with RETAIN set.
                        for (message, retained_offset) in self.shared.retained_matching(plain) {
                            let route = Route {
                                qos: filter.options.qos.min(message.qos),
                                retain: true,
                                identifiers: identifier.into_iter().collect(),
                            };
                            self.pending_retained.push_back((message, route, retained_offset));
                        }
                    }
                    match filter.options.qos {
                        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
                        QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                        QoS::ExactlyOnce => ReasonCode::GrantedQos2,
                    }
                }
                // A consumer group: no retained messages are sent to it, and it has no entry in the
                // session's plain subscriptions.
                Ok(topic::Subscription::Shared { group, filter: inner }) => {
                    match self.join_group(&filter.filter, group, inner, filter.options, identifier, &since) {
                        Ok(()) => granted(filter.options.qos),
                        Err(why) => {
                            refusals.push(why);
                            ReasonCode::ImplementationSpecificError
                        }
                    }
                }
                Ok(topic::Subscription::Stream { stream, filter: inner }) => {
                    let subscription = (filter.options, identifier);
                    match self.subscribe_stream(&filter.filter, stream, inner, subscription, &subscribe, &since) {
                        Ok(()) => granted(filter.options.qos),
                        Err((code, why)) => {
                            refusals.push(why);
                            code
                        }
                    }
                }
                Err(_) => ReasonCode::TopicFilterInvalid,
            };
            if max_subscriptions.is_some() && !code.is_error() {
                held.insert(filter.filter.to_string());
            }
            reason_codes.push(code);
        }
        if !self.subscriptions.is_empty() {
            // Live delivery starts at each partition's end.
            // From where the partitions ended when the SUBSCRIBE was read.
            let mut starts = readers::Resumed::from_high_watermarks(&self.shared.streams, &since);
            self.readers.follow_all(&self.shared.streams, &mut starts);
        }
        let mut properties = Properties::default();
        if !refusals.is_empty() && self.version.is_v5() {
            let mut why = refusals.join("; ");
            if let Some((cut, _)) = why.char_indices().nth(1024) {
                why.truncate(cut);
            }
            properties.reason_string = Some(why.into());
        }
        let suback = SubAck { packet_id: subscribe.packet_id, properties, reason_codes };
        self.queue(&Packet::SubAck(suback));
    }

    /// Starts the `$stream` subscription `subscribed_as` (`$stream/<stream>/<inner>`) with
    /// its options and Subscription Identifier, or says why not: its SUBACK reason code and
    /// reason string. `latest` is the log end in `since`, taken when the SUBSCRIBE was decoded.
    pub(super) fn subscribe_stream(
        &mut self,
        subscribed_as: &str,
        stream: &str,
        inner: &str,
        (options, identifier): (codec::SubscriptionOptions, Option<u32>),
        subscribe: &Subscribe,
        since: &[(u32, u64)],
    ) -> Result<(), replay::Refusal> {
        let request = replay::parse_request(stream, inner, &subscribe.properties.user_properties)
            .map_err(|why| (ReasonCode::ImplementationSpecificError, why))?;
        if topic::validate_topic_filter(&request.filter, &self.shared.config.limits.topics()).is_err() {
            return Err((ReasonCode::TopicFilterInvalid, format!("{subscribed_as}: invalid topic filter")));
        }
        let starts = replay::resolve(&self.shared.streams, &request, since)?;
        let compaction_key = self.shared.streams.get(stream).and_then(|s| s.compaction_key.clone());
        let subscription = replay::ReplaySubscription {
            subscribed_as: subscribed_as.to_owned(),
            stream: request.stream,
            filter: request.filter,
            options,
            identifier,
            compaction_key,
        };
        let starts = starts.into_iter().map(|(partition, next)| (partition, readers::ReplayStart::At(next))).collect();
        self.readers.add_replay(subscription, starts);
        Ok(())
    }
}

/// The SUBACK reason code granting `qos`.
pub(super) fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
        QoS::AtLeastOnce => ReasonCode::GrantedQos1,
        QoS::ExactlyOnce => ReasonCode::GrantedQos2,
    }
}
