//! Retention planning: a pure function from a partition's segment list to the segments to
//! delete. The log applies the plan; this module touches no files.

/// What the planner needs to know of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment's base offset (its file name).
    pub base_offset: u64,
    /// One past the last offset the segment may hold: the next segment's base offset, or the
    /// log end for the active segment.
    pub next_offset: u64,
    /// Size of the `.log` file in bytes.
    pub size_bytes: u64,
    /// Largest record timestamp in the segment (milliseconds); `i64::MIN` when empty, which
    /// time retention treats as expired.
    pub max_timestamp: i64,
}

/// Limits on what a partition keeps. `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete a segment once its newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while the partition stays at or above this size without them.
    pub retention_bytes: Option<u64>,
    /// Delete the oldest segments while at least this many offsets remain without them.
    pub retention_messages: Option<u64>,
}

/// Which limit a segment broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionReason {
    /// `retention_ms`.
    Time,
    /// `retention_bytes`.
    Bytes,
    /// `retention_messages`.
    Messages,
}

/// One decision of the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteSegment {
    /// The segment to delete.
    pub base_offset: u64,
    /// Its size, for accounting.
    pub size_bytes: u64,
    /// The limit that condemned it.
    pub reason: RetentionReason,
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Oldest first; always a prefix of the segment list.
    pub delete: Vec<DeleteSegment>,
    /// `log_start` once the deletions are done, if it moves.
    pub new_log_start: Option<u64>,
}

/// Plans retention over `segments` (sorted by base offset, the last one active).
///
/// Only a prefix is deleted, the active segment never is, and neither is any segment holding
/// an offset at or past `high_watermark`: readers may not have seen it yet.
pub fn plan_retention(
    segments: &[SegmentSummary],
    policy: &RetentionPolicy,
    now_ms: i64,
    high_watermark: u64,
) -> RetentionPlan {
    let Some(active) = segments.last() else {
        return RetentionPlan::default();
    };
    let log_end = active.next_offset;
    let mut remaining_bytes: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut plan = RetentionPlan::default();
    for (i, segment) in segments[..segments.len() - 1].iter().enumerate() {
        debug_assert!(segment.base_offset < segments[i + 1].base_offset, "segments are sorted");
        if segment.next_offset > high_watermark {
            break;
        }
        let remaining_messages_without = log_end - segments[i + 1].base_offset;
        let expired = policy.retention_ms.is_some_and(|limit| {
            segment.max_timestamp == i64::MIN || now_ms.saturating_sub(segment.max_timestamp) > limit as i64
        });
        let reason = if expired {
            RetentionReason::Time
        } else if policy.retention_bytes.is_some_and(|limit| remaining_bytes - segment.size_bytes >= limit) {
            RetentionReason::Bytes
        } else if policy.retention_messages.is_some_and(|limit| remaining_messages_without >= limit) {
            RetentionReason::Messages
        } else {
            break;
        };
        remaining_bytes -= segment.size_bytes;
        plan.delete.push(DeleteSegment { base_offset: segment.base_offset, size_bytes: segment.size_bytes, reason });
        plan.new_log_start = Some(segments[i + 1].base_offset);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten segments of 100 offsets and 1000 bytes; segment i's newest record is at i*10 ms.
    fn segments() -> Vec<SegmentSummary> {
        (0..10)
            .map(|i| SegmentSummary {
                base_offset: i * 100,
                next_offset: (i + 1) * 100,
                size_bytes: 1000,
                max_timestamp: i as i64 * 10,
            })
            .collect()
    }

    fn deleted(plan: &RetentionPlan) -> Vec<u64> {
        plan.delete.iter().map(|d| d.base_offset).collect()
    }

    #[test]
    fn nothing_is_deleted_without_limits() {
        let plan = plan_retention(&segments(), &RetentionPolicy::default(), 1_000_000, 1000);
        assert_eq!(plan, RetentionPlan::default());
    }

    #[test]
    fn time_deletes_the_expired_prefix_only() {
        let mut segs = segments();
        segs[1].max_timestamp = 500; // a late segment stops the prefix
        let policy = RetentionPolicy { retention_ms: Some(45), ..Default::default() };
        let plan = plan_retention(&segs, &policy, 100, 1000);
        assert_eq!(deleted(&plan), vec![0]);
        assert_eq!(plan.new_log_start, Some(100));
        assert!(plan.delete.iter().all(|d| d.reason == RetentionReason::Time));
        let plan = plan_retention(&segments(), &policy, 100, 1000);
        assert_eq!(deleted(&plan), vec![0, 100, 200, 300, 400, 500], "segments with max ts < 55 are expired");
    }

    #[test]
    fn bytes_keep_at_least_the_limit() {
        let policy = RetentionPolicy { retention_bytes: Some(3500), ..Default::default() };
        let plan = plan_retention(&segments(), &policy, 0, 1000);
        assert_eq!(deleted(&plan), vec![0, 100, 200, 300, 400, 500], "4000 bytes remain, 3000 would be too few");
        assert_eq!(plan.new_log_start, Some(600));
    }

    #[test]
    fn messages_keep_at_least_the_limit() {
        let policy = RetentionPolicy { retention_messages: Some(250), ..Default::default() };
        let plan = plan_retention(&segments(), &policy, 0, 1000);
        assert_eq!(deleted(&plan), (0..7).map(|i| i * 100).collect::<Vec<_>>(), "300 offsets remain");
        assert!(plan.delete.iter().all(|d| d.reason == RetentionReason::Messages));
    }

    #[test]
    fn the_active_segment_is_never_deleted() {
        let policy = RetentionPolicy { retention_ms: Some(0), retention_bytes: Some(0), retention_messages: Some(0) };
        let plan = plan_retention(&segments(), &policy, i64::MAX, 1000);
        assert_eq!(plan.delete.len(), 9);
        assert_eq!(plan.new_log_start, Some(900));
        let single = &segments()[..1];
        assert_eq!(plan_retention(single, &policy, i64::MAX, 1000), RetentionPlan::default());
    }

    #[test]
    fn nothing_at_or_past_the_high_watermark_is_deleted() {
        let policy = RetentionPolicy { retention_bytes: Some(0), ..Default::default() };
        let plan = plan_retention(&segments(), &policy, 0, 350);
        assert_eq!(deleted(&plan), vec![0, 100, 200], "segment 300 holds offset 350");
        let plan = plan_retention(&segments(), &policy, 0, 0);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn empty_closed_segments_count_as_expired() {
        let mut segs = segments();
        segs[0].max_timestamp = i64::MIN;
        let policy = RetentionPolicy { retention_ms: Some(1_000_000), ..Default::default() };
        assert_eq!(deleted(&plan_retention(&segs, &policy, 1_000, 1000)), vec![0]);
    }
}
