//! Who may connect. The password file holds one `user:hash` line per user, in Mosquitto's
//! formats (`$7$` PBKDF2-SHA512, `$6$` salted SHA-512, both as `mosquitto_passwd` writes them)
//! or Strata's own (an argon2id PHC string, as `strata passwd` writes it). [`Authenticator`]
//! turns a CONNECT's credentials into a [`Verdict`]; it does no I/O, so the connection task
//! runs it on a blocking thread (hashing is deliberately slow) and acts on the result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// A password file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {reason}", path.display())]
pub struct PasswordFileError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line; 0 when the file itself could not be read.
    pub line: usize,
    /// What is wrong, never the line's text (it holds a hash).
    pub reason: String,
}

/// One user's stored password.
#[derive(Clone)]
enum StoredPassword {
    /// Mosquitto's `$6$`: SHA-512 over the password then the salt.
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// Mosquitto's `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 { iterations: u32, salt: Vec<u8>, hash: Vec<u8> },
    /// Strata's own: an argon2 PHC string (`$argon2id$v=19$m=...`).
    Argon2(String),
}

impl StoredPassword {
    fn parse(text: &str) -> Result<StoredPassword, String> {
        let decode = |field: &str, what: &str| BASE64.decode(field).map_err(|_| format!("{what} is not base64"));
        if text.starts_with("$argon2") {
            let parsed = PasswordHash::new(text).map_err(|e| format!("argon2 hash: {e}"))?;
            argon2::Algorithm::try_from(parsed.algorithm).map_err(|e| format!("argon2 hash: {e}"))?;
            argon2::Params::try_from(&parsed).map_err(|e| format!("argon2 hash parameters: {e}"))?;
            if parsed.salt.is_none() || parsed.hash.is_none() {
                return Err("argon2 hash: no salt or no hash".to_owned());
            }
            return Ok(StoredPassword::Argon2(text.to_owned()));
        }
        let fields: Vec<&str> = text.split('$').collect();
        match fields.as_slice() {
            ["", "6", salt, hash] => {
                let salt = decode(salt, "the salt")?;
                let hash = decode(hash, "the hash")?;
                if hash.len() != 64 {
                    return Err(format!("a $6$ hash has 64 bytes, this one {}", hash.len()));
                }
                Ok(StoredPassword::Sha512 { salt, hash })
            }
            ["", "7", iterations, salt, hash] => {
                let iterations = iterations
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| "the $7$ iteration count is not a positive integer".to_owned())?;
                let salt = decode(salt, "the salt")?;
                let hash = decode(hash, "the hash")?;
                if hash.len() != 64 {
                    return Err(format!("a $7$ hash has 64 bytes, this one {}", hash.len()));
                }
                Ok(StoredPassword::Pbkdf2Sha512 { iterations, salt, hash })
            }
            _ => {
                Err("not a $6$, $7$ or $argon2id$ hash (a plain-text password? hash it with `strata passwd`)"
                    .to_owned())
            }
        }
    }

    fn matches(&self, password: &[u8]) -> bool {
        match self {
            StoredPassword::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                digest.finalize().as_slice().ct_eq(hash).into()
            }
            StoredPassword::Pbkdf2Sha512 { iterations, salt, hash } => {
                let mut derived = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut derived);
                derived.ct_eq(hash.as_slice()).into()
            }
            StoredPassword::Argon2(phc) => {
                // Parsed when the file was read, so this cannot fail on the format.
                PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
            }
        }
    }
}

/// The users of a password file.
#[derive(Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, StoredPassword>,
}

impl std::fmt::Debug for PasswordFile {
    // Names only: the hashes stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("PasswordFile").field("users", &names).finish()
    }
}

impl PasswordFile {
    /// Reads and checks `path`. Blank lines and lines starting with `#` are skipped.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| PasswordFileError {
            path: path.to_path_buf(),
            line: 0,
            reason: format!("cannot be read: {e}"),
        })?;
        PasswordFile::parse(&text, path)
    }

    /// Parses a password file's text; `path` is only for errors.
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let error = |reason: String| PasswordFileError { path: path.to_path_buf(), line: index + 1, reason };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(error("expected `user:hash`".to_owned()));
            };
            if user.is_empty() {
                return Err(error("empty user name".to_owned()));
            }
            let stored = StoredPassword::parse(hash).map_err(|reason| error(format!("user {user:?}: {reason}")))?;
            if users.insert(user.to_owned(), stored).is_some() {
                return Err(error(format!("user {user:?} appears twice")));
            }
        }
        Ok(PasswordFile { users })
    }

    /// How many users the file has.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` exists and `password` is theirs. An unknown user costs about as much as
    /// a known one, so that timing does not tell which user names exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(stored) => stored.matches(password),
            None => {
                let decoy = StoredPassword::Pbkdf2Sha512 { iterations: 101, salt: vec![0; 12], hash: vec![0; 64] };
                let _ = decoy.matches(password);
                false
            }
        }
    }
}

/// A new argon2id PHC string for `password`, with a random salt: what `strata passwd` writes.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = argon2::password_hash::SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default().hash_password(password, &salt).map(|hash| hash.to_string()).map_err(|e| e.to_string())
}

/// `[auth]`: who may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Whether clients without a verified user may connect. `None`: only while every MQTT
    /// listener is on a loopback address ([`AuthConfig::anonymous_allowed`]).
    pub allow_anonymous: Option<bool>,
    /// The users (`[auth] password_file`); `None`: nobody is verified, every client is
    /// anonymous.
    pub password_file: Option<PathBuf>,
    /// Who may read and write which topics (`[auth] acl_file`, issue 22); `None`: every
    /// client may read and write every topic but the broker's own (`$...`).
    pub acl_file: Option<PathBuf>,
    /// With mTLS (`[tls] client_ca_file`), a TLS client's user is its certificate's CN, and
    /// the CONNECT's user name and password are not checked (`[auth]
    /// use_identity_as_username`). Clients of the plaintext listeners are unaffected.
    pub use_identity_as_username: bool,
}

impl AuthConfig {
    /// Whether anonymous clients are let in, given the MQTT listeners' addresses.
    pub fn anonymous_allowed(&self, listeners: &[std::net::SocketAddr]) -> bool {
        self.allow_anonymous.unwrap_or_else(|| listeners.iter().all(|addr| addr.ip().is_loopback()))
    }
}

/// What a CONNECT's credentials get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// In; `user` is the verified user name, `None` for an anonymous client.
    Accept { user: Option<String> },
    /// A user name with a wrong or missing password, or an unknown user: CONNACK 0x86 (5.0),
    /// 0x04 (3.1.1).
    BadCredentials,
    /// Anonymous while anonymous clients are refused: CONNACK 0x87 (5.0), 0x05 (3.1.1).
    AnonymousRefused,
    /// A client certificate with no CN while the CN is the user name: CONNACK 0x87 (5.0),
    /// 0x05 (3.1.1).
    NoCertificateName,
}

/// The decision at CONNECT, from the password file and the anonymous rule.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    allow_anonymous: bool,
    users: Option<PasswordFile>,
    identity_as_username: bool,
}

impl Authenticator {
    pub(crate) fn new(allow_anonymous: bool, users: Option<PasswordFile>) -> Authenticator {
        Authenticator { allow_anonymous, users, identity_as_username: false }
    }

    /// The same rules with the users of a reloaded password file.
    pub(crate) fn with_users(&self, users: PasswordFile) -> Authenticator {
        Authenticator { users: Some(users), ..self.clone() }
    }

    /// `[auth] use_identity_as_username`: see [`Authenticator::decide_by_certificate`].
    pub(crate) fn with_identity_as_username(self, on: bool) -> Authenticator {
        Authenticator { identity_as_username: on, ..self }
    }

    /// With `use_identity_as_username`, a client that presented a verified certificate is the
    /// user its CN names, whatever its CONNECT says: the certificate is the credential, so no
    /// password is asked for, the password file is not consulted, and `allow_anonymous` does
    /// not apply (the client is not anonymous). A certificate without a CN is refused.
    /// `None`: the certificate decides nothing (no certificate, or the option is off), and
    /// [`Authenticator::decide`] applies.
    pub(crate) fn decide_by_certificate(&self, common_name: Option<Option<&str>>) -> Option<Verdict> {
        if !self.identity_as_username {
            return None;
        }
        Some(match common_name? {
            Some(name) if !name.is_empty() => Verdict::Accept { user: Some(name.to_owned()) },
            _ => Verdict::NoCertificateName,
        })
    }

    pub(crate) fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// Whether [`Authenticator::decide`] hashes (and so belongs on a blocking thread).
    pub(crate) fn verifies(&self, username: Option<&str>) -> bool {
        self.users.is_some() && username.is_some()
    }

    /// A user name is verified against the password file when there is one; without a file
    /// nobody can be verified, so every client counts as anonymous, as in Mosquitto.
    pub(crate) fn decide(&self, username: Option<&str>, password: Option<&[u8]>) -> Verdict {
        match (&self.users, username) {
            (Some(users), Some(user)) => match password {
                Some(password) if users.verify(user, password) => Verdict::Accept { user: Some(user.to_owned()) },
                _ => Verdict::BadCredentials,
            },
            _ if self.allow_anonymous => Verdict::Accept { user: None },
            _ => Verdict::AnonymousRefused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by mosquitto_passwd 2.0.11: `-b FILE alice secret` and
    // `-H sha512 -b FILE bob hunter2`.
    const MOSQUITTO_FILE: &str = "\
alice:$7$101$zDDHHORfGA/qS98+$ERiCdaJLSuM+wKmqcNh3nHKsOv1ripXk+t7s8IjckyKa0giY6CRavKy1LucKlcwgZNG5zvEfv13se3CuzH/VLw==
bob:$6$isbEZlGr/u0i7a6j$/sJ4kVpprgtsTqS3vvPsIw21uw2LYvSFzxZPORHEojf5evfTDBCx93bZ5+WyKC/Yzj6zorMQHgWoX+fqvmVVgQ==
";

    fn file(text: &str) -> PasswordFile {
        PasswordFile::parse(text, Path::new("passwd")).unwrap()
    }

    #[test]
    fn mosquitto_pbkdf2_and_sha512_lines_verify_their_passwords_only() {
        let users = file(MOSQUITTO_FILE);
        assert_eq!(users.len(), 2);
        assert!(users.verify("alice", b"secret"));
        assert!(!users.verify("alice", b"secreT"));
        assert!(!users.verify("alice", b"hunter2"));
        assert!(users.verify("bob", b"hunter2"));
        assert!(!users.verify("bob", b"secret"));
        assert!(!users.verify("carol", b"secret"));
    }

    #[test]
    fn argon2id_lines_written_by_hash_password_verify() {
        let line = format!("# a comment\n\ndave:{}\n", hash_password(b"correct horse").unwrap());
        assert!(line.contains(":$argon2id$"));
        let users = file(&line);
        assert!(users.verify("dave", b"correct horse"));
        assert!(!users.verify("dave", b"correct horse "));
    }

    #[test]
    fn bad_lines_are_refused_naming_the_line_and_never_echoing_it() {
        let cases = [
            ("alice:secret\n", 1, "plain-text"),
            ("# ok\nalice\n", 2, "user:hash"),
            (":$6$c2FsdA==$AAAA\n", 1, "empty user"),
            ("bob:$6$c2FsdA==$AAAA\n", 1, "64 bytes"),
            ("bob:$7$zero$c2FsdA==$AAAA\n", 1, "iteration"),
            ("bob:$6$%%%$AAAA\n", 1, "base64"),
            ("bob:$argon2id$nonsense\n", 1, "argon2"),
        ];
        for (text, line, reason) in cases {
            let error = PasswordFile::parse(text, Path::new("/etc/strata/passwd")).unwrap_err();
            assert_eq!(error.line, line, "{text:?}");
            let message = error.to_string();
            assert!(message.starts_with(&format!("/etc/strata/passwd:{line}: ")), "{message}");
            assert!(message.contains(reason), "{text:?}: {message}");
            assert!(!message.contains("secret") && !message.contains("AAAA"), "the line leaked: {message}");
        }
        let twice = format!("{MOSQUITTO_FILE}{}", MOSQUITTO_FILE.lines().next().unwrap());
        assert!(PasswordFile::parse(&twice, Path::new("p")).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn the_verdict_for_every_kind_of_client() {
        let with_users = |anonymous| Authenticator::new(anonymous, Some(file(MOSQUITTO_FILE)));
        let accept = |user: Option<&str>| Verdict::Accept { user: user.map(str::to_owned) };
        for anonymous in [false, true] {
            let auth = with_users(anonymous);
            assert_eq!(auth.decide(Some("alice"), Some(b"secret")), accept(Some("alice")));
            assert_eq!(auth.decide(Some("alice"), Some(b"wrong")), Verdict::BadCredentials);
            assert_eq!(auth.decide(Some("alice"), None), Verdict::BadCredentials);
            assert_eq!(auth.decide(Some("mallory"), Some(b"secret")), Verdict::BadCredentials);
            let anonymous_verdict = if anonymous { accept(None) } else { Verdict::AnonymousRefused };
            assert_eq!(auth.decide(None, None), anonymous_verdict);
            // MQTT 5 allows a password without a user name: still nobody in particular.
            assert_eq!(auth.decide(None, Some(b"secret")), anonymous_verdict);
        }
        // Without a password file nobody is verified: a user name alone proves nothing.
        assert_eq!(Authenticator::new(true, None).decide(Some("alice"), Some(b"x")), accept(None));
        assert_eq!(Authenticator::new(false, None).decide(Some("alice"), Some(b"x")), Verdict::AnonymousRefused);
    }

    /// Issue 22: with `use_identity_as_username`, the certificate's CN is the user, whatever
    /// the CONNECT says and whatever the password file and `allow_anonymous` say.
    #[test]
    fn tls_the_certificate_name_is_the_user_only_with_use_identity_as_username() {
        let accept = |user: &str| Some(Verdict::Accept { user: Some(user.to_owned()) });
        let off = Authenticator::new(false, Some(file(MOSQUITTO_FILE)));
        assert_eq!(off.decide_by_certificate(Some(Some("alice"))), None);
        for users in [None, Some(file(MOSQUITTO_FILE))] {
            let on = Authenticator::new(false, users).with_identity_as_username(true);
            assert_eq!(on.decide_by_certificate(Some(Some("alice"))), accept("alice"));
            // Not in the password file: the CA vouched for it.
            assert_eq!(on.decide_by_certificate(Some(Some("carol"))), accept("carol"));
            assert_eq!(on.decide_by_certificate(Some(None)), Some(Verdict::NoCertificateName));
            assert_eq!(on.decide_by_certificate(Some(Some(""))), Some(Verdict::NoCertificateName));
            // No certificate (a plaintext listener): the usual rules.
            assert_eq!(on.decide_by_certificate(None), None);
        }
    }

    #[test]
    fn anonymous_clients_are_allowed_by_default_only_while_every_listener_is_loopback() {
        let loopback: std::net::SocketAddr = "127.0.0.1:1883".parse().unwrap();
        let v6_loopback: std::net::SocketAddr = "[::1]:8080".parse().unwrap();
        let everywhere: std::net::SocketAddr = "0.0.0.0:1883".parse().unwrap();
        let default = AuthConfig::default();
        assert!(default.anonymous_allowed(&[loopback, v6_loopback]));
        assert!(!default.anonymous_allowed(&[loopback, everywhere]));
        let explicit = AuthConfig { allow_anonymous: Some(true), ..AuthConfig::default() };
        assert!(explicit.anonymous_allowed(&[everywhere]));
        let closed = AuthConfig { allow_anonymous: Some(false), ..AuthConfig::default() };
        assert!(!closed.anonymous_allowed(&[loopback]));
    }
}
