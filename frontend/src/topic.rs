//! Topic names and filters: validation, matching, and the special prefixes `$share/` (consumer
//! groups) and `$stream/` (replay by offset). Pure functions, no I/O.

use std::fmt;

/// Limits on topics, from the broker's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicLimits {
    /// Longest topic name or filter, in bytes (the protocol's own cap is 65,535).
    pub max_length: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter.
    pub max_levels: usize,
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits { max_length: 65_535, max_levels: 128 }
    }
}

/// Why a topic name or filter is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicError {
    /// Empty.
    Empty,
    /// Longer than the configured maximum.
    TooLong,
    /// More levels than the configured maximum.
    TooManyLevels,
    /// Holds U+0000.
    NulCharacter,
    /// A topic name (not a filter) holds `+` or `#`.
    WildcardInName,
    /// `+` or `#` shares a level with other characters, or `#` is not last.
    MisplacedWildcard,
    /// `$share/` without a group name, with a group holding `/`, `+` or `#`, or without a filter.
    BadSharedSubscription,
    /// `$stream/` without a stream name, or with wildcards in the stream name.
    BadStreamSubscription,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "topic is empty",
            TopicError::TooLong => "topic is longer than the broker allows",
            TopicError::TooManyLevels => "topic has more levels than the broker allows",
            TopicError::NulCharacter => "topic contains U+0000",
            TopicError::WildcardInName => "a topic name cannot contain + or #",
            TopicError::MisplacedWildcard => "+ and # must stand alone in their level, and # must be last",
            TopicError::BadSharedSubscription => "a shared subscription is $share/<group>/<filter>",
            TopicError::BadStreamSubscription => "a stream subscription is $stream/<stream>[/<filter>]",
        })
    }
}

impl std::error::Error for TopicError {}

fn check_common(topic: &str, limits: &TopicLimits) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > limits.max_length {
        return Err(TopicError::TooLong);
    }
    if topic.contains('\0') {
        return Err(TopicError::NulCharacter);
    }
    if topic.split('/').count() > limits.max_levels {
        return Err(TopicError::TooManyLevels);
    }
    Ok(())
}

/// Checks a topic name as a PUBLISH carries it.
pub fn validate_topic_name(topic: &str, limits: &TopicLimits) -> Result<(), TopicError> {
    check_common(topic, limits)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a plain topic filter (no `$share/` or `$stream/` prefix handling).
pub fn validate_topic_filter(filter: &str, limits: &TopicLimits) -> Result<(), TopicError> {
    check_common(filter, limits)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wildcard_inside = level.len() > 1 && level.contains(['+', '#']);
        let hash_not_last = *level == "#" && i + 1 != levels.len();
        if wildcard_inside || hash_not_last {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// Whether `filter` matches `topic`. Wildcards at the first level do not match topics that
/// start with `$` (MQTT-4.7.2-1), so `#` never delivers `$SYS/...` or `$stream/...`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What a SUBSCRIBE topic filter asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription<'a> {
    /// A plain filter.
    Plain(&'a str),
    /// `$share/<group>/<filter>`: a consumer group.
    Shared {
        /// The group name.
        group: &'a str,
        /// The filter the group consumes.
        filter: &'a str,
    },
    /// `$stream/<stream>[/<filter>]`: replay of one stream from an offset.
    Stream {
        /// The stream name.
        stream: &'a str,
        /// Topics of the stream to deliver (`#` when absent).
        filter: &'a str,
    },
}

/// Parses and validates a SUBSCRIBE topic filter.
pub fn parse_subscription<'a>(filter: &'a str, limits: &TopicLimits) -> Result<Subscription<'a>, TopicError> {
    if let Some(rest) = filter.strip_prefix("$share/") {
        let (group, inner) = rest.split_once('/').ok_or(TopicError::BadSharedSubscription)?;
        if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
            return Err(TopicError::BadSharedSubscription);
        }
        validate_topic_filter(inner, limits)?;
        return Ok(Subscription::Shared { group, filter: inner });
    }
    if let Some(rest) = filter.strip_prefix("$stream/") {
        let (stream, inner) = rest.split_once('/').unwrap_or((rest, "#"));
        if stream.is_empty() || stream.contains(['+', '#']) {
            return Err(TopicError::BadStreamSubscription);
        }
        validate_topic_filter(inner, limits)?;
        return Ok(Subscription::Stream { stream, filter: inner });
    }
    validate_topic_filter(filter, limits)?;
    Ok(Subscription::Plain(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_per_the_spec() {
        let cases = [
            ("sport/tennis/#", "sport/tennis/player1", true),
            ("sport/tennis/#", "sport/tennis", true),
            ("sport/#", "sport", true),
            ("#", "a/b/c", true),
            ("sport/+", "sport/", true),
            ("sport/+", "sport", false),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a/b/d", false),
            ("a/b", "a/b/c", false),
            ("#", "$SYS/uptime", false),
            ("+/uptime", "$SYS/uptime", false),
            ("$SYS/#", "$SYS/uptime", true),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn bad_names_and_filters_are_refused() {
        let limits = TopicLimits { max_length: 20, max_levels: 3 };
        assert_eq!(validate_topic_name("a/+", &limits), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("", &limits), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a\0b", &limits), Err(TopicError::NulCharacter));
        assert_eq!(validate_topic_name("a/b/c/d", &limits), Err(TopicError::TooManyLevels));
        assert_eq!(validate_topic_name(&"x".repeat(21), &limits), Err(TopicError::TooLong));
        assert_eq!(validate_topic_filter("a/#/b", &limits), Err(TopicError::MisplacedWildcard));
        assert_eq!(validate_topic_filter("a/b#", &limits), Err(TopicError::MisplacedWildcard));
        assert_eq!(validate_topic_filter("a+/b", &limits), Err(TopicError::MisplacedWildcard));
        assert!(validate_topic_filter("+/+/#", &limits).is_ok());
    }

    #[test]
    fn share_and_stream_prefixes_parse() {
        let limits = TopicLimits::default();
        assert_eq!(
            parse_subscription("$share/g1/a/+", &limits),
            Ok(Subscription::Shared { group: "g1", filter: "a/+" })
        );
        assert_eq!(parse_subscription("$share/g1", &limits), Err(TopicError::BadSharedSubscription));
        assert_eq!(parse_subscription("$share//a", &limits), Err(TopicError::BadSharedSubscription));
        assert_eq!(
            parse_subscription("$stream/orders", &limits),
            Ok(Subscription::Stream { stream: "orders", filter: "#" })
        );
        assert_eq!(
            parse_subscription("$stream/orders/eu/#", &limits),
            Ok(Subscription::Stream { stream: "orders", filter: "eu/#" })
        );
        assert_eq!(parse_subscription("$stream/+/x", &limits), Err(TopicError::BadStreamSubscription));
        assert_eq!(parse_subscription("a/#", &limits), Ok(Subscription::Plain("a/#")));
    }
}
