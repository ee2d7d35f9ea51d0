//! Who may read and write which topics: `[auth] acl_file`, in Mosquitto's acl_file syntax
//! (issue 22). Pure: [`AclFile`] is the parsed file, [`Permissions`] the rules that apply to
//! one connection (its user name and client id substituted into the `pattern` lines), built
//! once at CONNECT so that each check is a scan of a short list without allocation.
//!
//! ```text
//! # Before the first `user` line: anonymous clients.
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! # Everyone, wherever the line is:
//! pattern readwrite devices/%c/#
//! pattern read users/%u/#
//! ```
//!
//! A `deny` rule that matches wins over every grant; otherwise an action is allowed when
//! some matching rule grants it, and refused when none does (a user without rules may do
//! nothing). A SUBSCRIBE filter is readable only when one read rule covers every topic it
//! can match and no deny rule matches any of them: Strata refuses at SUBSCRIBE instead of
//! filtering each delivery, so the whole filter must be readable (docs/security.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::topic;

/// An ACL file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {reason}", path.display())]
pub struct AclFileError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line; 0 when the file itself could not be read.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// What a rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Subscribe and receive.
    Read,
    /// Publish.
    Write,
    /// Both (a rule without an access word).
    ReadWrite,
    /// Neither, whatever other rules say.
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    fn grants(self, action: Action) -> bool {
        matches!((self, action), (Access::ReadWrite, _) | (Access::Read, Action::Read) | (Access::Write, Action::Write))
    }
}

/// What a client wants to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Subscribe to it.
    Read,
    /// Publish to it.
    Write,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// The rules of an ACL file.
#[derive(Clone, Debug, Default)]
pub struct AclFile {
    /// `topic` lines before the first `user` line.
    anonymous: Vec<Rule>,
    /// `topic` lines by the `user` section they are in (sections of one name add up).
    users: HashMap<String, Vec<Rule>>,
    /// `pattern` lines, wherever they are: every client's, after substitution.
    patterns: Vec<Rule>,
}

impl AclFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<AclFile, AclFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclFileError {
            path: path.to_path_buf(),
            line: 0,
            reason: format!("cannot be read: {e}"),
        })?;
        AclFile::parse(&text, path)
    }

    /// Parses an ACL file's text; `path` is only for errors. Blank lines and lines starting
    /// with `#` are skipped. Unlike Mosquitto, an unknown keyword is an error rather than
    /// ignored: a mistyped `topics` line would otherwise silently grant nothing.
    pub fn parse(text: &str, path: &Path) -> Result<AclFile, AclFileError> {
        let mut acl = AclFile::default();
        let mut section: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let error = |reason: String| AclFileError { path: path.to_path_buf(), line: index + 1, reason };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(error("`user` without a user name".to_owned()));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    section = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(keyword, rest).map_err(error)?;
                    match (keyword, &section) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, Some(user)) => acl.users.entry(user.clone()).or_default().push(rule),
                        (_, None) => acl.anonymous.push(rule),
                    }
                }
                other => {
                    return Err(error(format!("unknown keyword {other:?}: expected `user`, `topic` or `pattern`")));
                }
            }
        }
        Ok(acl)
    }

    /// The rules that apply to a client: its user's `topic` lines (the anonymous ones when
    /// `user` is `None`) and every `pattern` line with `%u` and `%c` replaced. A pattern
    /// naming `%u` does not apply to an anonymous client. A user name or client id holding
    /// `+` or `#` would turn a pattern into a wildcard: such a client gets no rights at all,
    /// as in Mosquitto.
    pub fn for_client(&self, user: Option<&str>, client_id: &str) -> Permissions {
        let wildcard = |s: &str| s.contains(['+', '#']);
        if wildcard(client_id) || user.is_some_and(wildcard) {
            return Permissions { rules: Some(Vec::new()) };
        }
        let own = match user {
            Some(user) => self.users.get(user).map_or(&[][..], Vec::as_slice),
            None => &self.anonymous,
        };
        let mut rules: Vec<Rule> = own.to_vec();
        for pattern in &self.patterns {
            if user.is_none() && pattern.filter.contains("%u") {
                continue;
            }
            let filter = pattern.filter.replace("%c", client_id).replace("%u", user.unwrap_or_default());
            rules.push(Rule { access: pattern.access, filter });
        }
        Permissions { rules: Some(rules) }
    }
}

/// `topic|pattern [read|write|readwrite|deny] FILTER`. As in Mosquitto, the filter is the
/// rest of the line after the access word, so it may hold spaces.
fn parse_rule(keyword: &str, rest: &str) -> Result<Rule, String> {
    if rest.is_empty() {
        return Err(format!("`{keyword}` without a topic filter"));
    }
    let (access, filter) = match rest.split_once([' ', '\t']) {
        Some((word, filter)) => {
            let access = Access::parse(word).ok_or_else(|| {
                format!("{word:?} is not an access type: expected read, write, readwrite or deny before the filter")
            })?;
            (access, filter.trim())
        }
        None => (Access::ReadWrite, rest),
    };
    // Checked with the substitutions standing in for a plain level, which they are at
    // check time (a client whose name would make them a wildcard gets no rights).
    let checked = filter.replace("%u", "u").replace("%c", "c");
    topic::validate_topic_filter(&checked, &topic::TopicLimits::default())
        .map_err(|e| format!("topic filter {filter:?}: {e}"))?;
    Ok(Rule { access, filter: filter.to_owned() })
}

/// What one connection may do: the rules of its user and the patterns, substituted.
#[derive(Clone, Debug)]
pub struct Permissions {
    /// `None`: there is no ACL file and every topic is allowed.
    rules: Option<Vec<Rule>>,
}

impl Permissions {
    /// Without an ACL file: every topic may be read and written.
    pub fn allow_all() -> Permissions {
        Permissions { rules: None }
    }

    /// Whether the client may publish to `topic`. Topics starting with `$` are the broker's
    /// (`$SYS`, `$stream`, ...): no client may publish to them, ACL file or not.
    pub fn may_publish(&self, topic: &str) -> bool {
        !topic.starts_with('$') && self.may(topic, Action::Write)
    }

    /// Whether `action` on the topic name `topic` is allowed: no deny rule matches it and
    /// some rule matching it grants the action.
    pub fn may(&self, topic: &str, action: Action) -> bool {
        let Some(rules) = &self.rules else { return true };
        let matching = || rules.iter().filter(|rule| topic::matches(&rule.filter, topic));
        !matching().any(|rule| rule.access == Access::Deny) && matching().any(|rule| rule.access.grants(action))
    }

    /// Whether the client may subscribe to the topic filter `filter`: some read rule covers
    /// every topic it matches, and no deny rule matches any of them.
    pub fn may_read_filter(&self, filter: &str) -> bool {
        let Some(rules) = &self.rules else { return true };
        !rules.iter().any(|rule| rule.access == Access::Deny && overlaps(&rule.filter, filter))
            && rules.iter().any(|rule| rule.access.grants(Action::Read) && covers(&rule.filter, filter))
    }
}

/// Whether the first level of `filter` is a wildcard, which never matches a `$` topic
/// (MQTT-4.7.2-1).
fn wild_first(filter: &str) -> bool {
    filter.starts_with(['+', '#'])
}

/// Whether every topic `inner` matches is matched by `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with('$') && wild_first(outer) {
        return false;
    }
    let (mut outer, mut inner) = (outer.split('/'), inner.split('/'));
    loop {
        match (outer.next(), inner.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic is matched by both filters.
fn overlaps(a: &str, b: &str) -> bool {
    if (wild_first(a) && b.starts_with('$')) || (wild_first(b) && a.starts_with('$')) {
        return false;
    }
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous clients
topic read public/#
topic deny public/private

user alice
topic readwrite alice/#
topic write shared/inbox
topic deny alice/secret/#

user bob
topic bob/#
topic read $SYS/#

pattern read devices/%c/#
pattern readwrite users/%u/#
pattern write  logs/%u/%c
";

    fn acl() -> AclFile {
        AclFile::parse(FILE, Path::new("acl")).unwrap()
    }

    // Issue 22: an oracle table of topic checks, worked out by hand from Mosquitto's rules.
    #[test]
    fn auth_acl_topic_checks_follow_mosquitto() {
        use Action::{Read, Write};
        let acl = acl();
        let cases: &[(Option<&str>, &str, &str, Action, bool)] = &[
            (None, "c1", "public/news", Read, true),
            (None, "c1", "public/news", Write, false),
            (None, "c1", "public/private", Read, false),
            (None, "c1", "alice/x", Read, false),
            (None, "c1", "devices/c1/temp", Read, true),
            (None, "c1", "devices/c2/temp", Read, false),
            // `%u` patterns do not apply to anonymous clients, even as an empty level.
            (None, "c1", "users//x", Read, false),
            (Some("alice"), "a1", "alice/x", Write, true),
            (Some("alice"), "a1", "alice/x", Read, true),
            (Some("alice"), "a1", "alice/secret/k", Read, false),
            (Some("alice"), "a1", "alice/secret", Write, false),
            (Some("alice"), "a1", "shared/inbox", Write, true),
            (Some("alice"), "a1", "shared/inbox", Read, false),
            // Anonymous rules are not a user's.
            (Some("alice"), "a1", "public/news", Read, false),
            (Some("alice"), "a1", "users/alice/x", Write, true),
            (Some("alice"), "a1", "users/bob/x", Read, false),
            (Some("alice"), "a1", "devices/a1/t", Read, true),
            (Some("alice"), "a1", "devices/a1/t", Write, false),
            (Some("alice"), "a1", "logs/alice/a1", Write, true),
            (Some("alice"), "a1", "logs/alice/a2", Write, false),
            (Some("bob"), "b1", "bob/x", Write, true),
            (Some("bob"), "b1", "bob/x", Read, true),
            // `#` never matches a `$` topic: `$SYS` is read only with its own rule.
            (Some("bob"), "b1", "$SYS/broker/uptime", Read, true),
            (Some("alice"), "a1", "$SYS/broker/uptime", Read, false),
            // A user the file does not name gets the patterns only.
            (Some("carol"), "c9", "users/carol/x", Read, true),
            (Some("carol"), "c9", "public/news", Read, false),
            // A client id that would make a pattern a wildcard gets nothing.
            (Some("alice"), "#", "alice/x", Read, false),
            (Some("a+"), "c", "users/a+/x", Read, false),
        ];
        for &(user, client_id, topic, action, want) in cases {
            let got = acl.for_client(user, client_id).may(topic, action);
            assert_eq!(got, want, "{user:?} {client_id} {topic} {action:?}");
        }
    }

    #[test]
    fn auth_acl_subscription_filters_must_be_readable_throughout() {
        let acl = acl();
        let alice = acl.for_client(Some("alice"), "a1");
        let anonymous = acl.for_client(None, "c1");
        let bob = acl.for_client(Some("bob"), "b1");
        let cases: &[(&Permissions, &str, bool)] = &[
            (&alice, "alice/inbox", true),
            // alice/secret/# matches alice/secret itself.
            (&alice, "alice/+", false),
            (&alice, "alice/inbox/+", true),
            // Would include alice/secret/...
            (&alice, "alice/#", false),
            (&alice, "alice/+/k", false),
            (&alice, "alice/public/#", true),
            (&alice, "#", false),
            (&alice, "+/x", false),
            (&alice, "devices/a1/#", true),
            (&alice, "devices/+/t", false),
            (&alice, "shared/inbox", false),
            (&anonymous, "public/news", true),
            (&anonymous, "public/#", false),
            (&anonymous, "public/+/x", true),
            (&anonymous, "public/+", false),
            (&bob, "bob/#", true),
            (&bob, "$SYS/#", true),
            (&bob, "#", false),
            (&bob, "$SYS/broker/+", true),
        ];
        for &(who, filter, want) in cases {
            assert_eq!(who.may_read_filter(filter), want, "{filter}");
        }
        let all = Permissions::allow_all();
        assert!(all.may_read_filter("#") && all.may("x", Action::Write) && all.may_read_filter("$SYS/#"));
    }

    #[test]
    fn auth_acl_dollar_topics_are_never_published() {
        let acl = AclFile::parse("topic readwrite #\ntopic readwrite $SYS/#\n", Path::new("acl")).unwrap();
        let anyone = acl.for_client(None, "c");
        assert!(anyone.may_publish("a/b"));
        assert!(anyone.may("$SYS/x", Action::Write));
        assert!(!anyone.may_publish("$SYS/x"));
        assert!(!Permissions::allow_all().may_publish("$stream/orders"));
        assert!(Permissions::allow_all().may_publish("orders/1"));
    }

    #[test]
    fn auth_acl_covers_and_overlaps() {
        for (outer, inner, want) in [
            ("#", "a/b", true),
            ("a/#", "a", true),
            ("a/+", "a/#", false),
            ("a/+", "a/+", true),
            ("+", "$SYS", false),
            ("$SYS/#", "#", false),
            ("a/b", "a/+", false),
        ] {
            assert_eq!(covers(outer, inner), want, "{outer} covers {inner}");
        }
        for (a, b, want) in [
            ("a/b", "a/+", true),
            ("a/#", "a", true),
            ("a/b/c", "a/+", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "#", false),
            ("a/+/c", "+/b/#", true),
            ("a", "b", false),
        ] {
            assert_eq!(overlaps(a, b), want, "{a} overlaps {b}");
            assert_eq!(overlaps(b, a), want, "{b} overlaps {a}");
        }
    }

    #[test]
    fn auth_acl_bad_lines_are_refused_naming_file_and_line() {
        let cases = [
            ("user\n", 1, "without a user name"),
            ("# c\ntopic\n", 2, "without a topic filter"),
            ("topic reed a/b\n", 1, "not an access type"),
            ("topic read a/#/b\n", 1, "topic filter"),
            ("pattern read a/%u#\n", 1, "topic filter"),
            ("\n\ntopics read a\n", 3, "unknown keyword"),
        ];
        for (text, line, reason) in cases {
            let error = AclFile::parse(text, Path::new("/etc/strata/acl")).unwrap_err();
            assert_eq!(error.line, line, "{text:?}");
            let message = error.to_string();
            assert!(message.starts_with(&format!("/etc/strata/acl:{line}: ")), "{message}");
            assert!(message.contains(reason), "{text:?}: {message}");
        }
        let missing = AclFile::load(Path::new("/nonexistent/acl")).unwrap_err();
        assert_eq!(missing.line, 0);
        assert!(missing.to_string().contains("cannot be read"));
    }

    #[test]
    fn auth_acl_rules_without_access_word_are_readwrite_and_filters_may_hold_spaces() {
        let acl = AclFile::parse("user a b\ntopic x\ntopic read  with space/#  \r\n", Path::new("acl")).unwrap();
        let user = acl.for_client(Some("a b"), "c");
        assert!(user.may("x", Action::Read) && user.may("x", Action::Write));
        assert!(user.may("with space/1", Action::Read) && !user.may("with space/1", Action::Write));
    }
}
