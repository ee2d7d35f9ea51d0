//! MQTT 5 topic aliases, both ways, as plain per-connection state. Inbound: the client's
//! aliases, up to our Topic Alias Maximum, resolved to topics before anything is stored (the
//! alias never reaches the log). Outbound: aliases we assign, first come first served, up to
//! the client's Topic Alias Maximum; the topic is sent only with an alias's first use.

use std::collections::HashMap;

use bytestring::ByteString;

/// The client's aliases on one connection.
#[derive(Debug)]
pub(crate) struct InboundAliases {
    maximum: u16,
    topics: HashMap<u16, ByteString>,
}

impl InboundAliases {
    /// Accepts aliases 1 to `maximum` (our Topic Alias Maximum; 0 accepts none).
    pub(crate) fn new(maximum: u16) -> InboundAliases {
        InboundAliases { maximum, topics: HashMap::new() }
    }

    /// The topic a PUBLISH stands for: `topic` itself (setting `alias` to it when one is
    /// given), or the topic `alias` was set to when `topic` is empty. `Err` is the reason
    /// string for DISCONNECT 0x94 Topic Alias Invalid.
    pub(crate) fn resolve(&mut self, topic: &ByteString, alias: Option<u16>) -> Result<ByteString, String> {
        let Some(alias) = alias else { return Ok(topic.clone()) };
        if alias == 0 || alias > self.maximum {
            return Err(format!("Topic Alias {alias} is outside 1 to our Topic Alias Maximum {}", self.maximum));
        }
        if topic.is_empty() {
            return self.topics.get(&alias).cloned().ok_or_else(|| format!("Topic Alias {alias} was never set"));
        }
        self.topics.insert(alias, topic.clone());
        Ok(topic.clone())
    }
}

/// The aliases we assign towards one client.
#[derive(Debug)]
pub(crate) struct OutboundAliases {
    maximum: u16,
    aliases: HashMap<ByteString, u16>,
}

/// How to send a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutboundTopic {
    /// No alias: the topic in full.
    Plain,
    /// The alias's first use: the topic and the alias, which sets it.
    SetAlias(u16),
    /// An empty topic and the alias.
    UseAlias(u16),
}

impl OutboundAliases {
    /// Uses aliases 1 to `maximum` (the client's Topic Alias Maximum; 0 or absent: none).
    pub(crate) fn new(maximum: u16) -> OutboundAliases {
        OutboundAliases { maximum, aliases: HashMap::new() }
    }

    /// How to send `topic`, assigning it the next free alias if there is one. Aliases are
    /// never reassigned, so the first `maximum` topics keep theirs for the connection.
    pub(crate) fn topic(&mut self, topic: &ByteString) -> OutboundTopic {
        if let Some(&alias) = self.aliases.get(topic) {
            return OutboundTopic::UseAlias(alias);
        }
        if self.aliases.len() >= usize::from(self.maximum) {
            return OutboundTopic::Plain;
        }
        let alias = self.aliases.len() as u16 + 1;
        self.aliases.insert(topic.clone(), alias);
        OutboundTopic::SetAlias(alias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_aliases_are_set_then_used() {
        let mut aliases = InboundAliases::new(2);
        let topic = ByteString::from("a/b");
        assert_eq!(aliases.resolve(&topic, None).unwrap(), "a/b");
        assert_eq!(aliases.resolve(&topic, Some(1)).unwrap(), "a/b");
        assert_eq!(aliases.resolve(&ByteString::new(), Some(1)).unwrap(), "a/b");
        // Re-set to another topic.
        assert_eq!(aliases.resolve(&ByteString::from("c"), Some(1)).unwrap(), "c");
        assert_eq!(aliases.resolve(&ByteString::new(), Some(1)).unwrap(), "c");
    }

    #[test]
    fn inbound_zero_too_large_and_unknown_aliases_are_refused() {
        let mut aliases = InboundAliases::new(2);
        assert!(aliases.resolve(&ByteString::from("a"), Some(0)).is_err());
        assert!(aliases.resolve(&ByteString::from("a"), Some(3)).is_err());
        assert!(aliases.resolve(&ByteString::new(), Some(2)).is_err());
        assert!(InboundAliases::new(0).resolve(&ByteString::from("a"), Some(1)).is_err());
    }

    #[test]
    fn outbound_aliases_go_first_come_up_to_the_maximum() {
        let mut aliases = OutboundAliases::new(2);
        let (a, b, c) = (ByteString::from("a"), ByteString::from("b"), ByteString::from("c"));
        assert_eq!(aliases.topic(&a), OutboundTopic::SetAlias(1));
        assert_eq!(aliases.topic(&a), OutboundTopic::UseAlias(1));
        assert_eq!(aliases.topic(&b), OutboundTopic::SetAlias(2));
        assert_eq!(aliases.topic(&c), OutboundTopic::Plain);
        assert_eq!(aliases.topic(&b), OutboundTopic::UseAlias(2));
        assert_eq!(OutboundAliases::new(0).topic(&a), OutboundTopic::Plain);
    }
}
