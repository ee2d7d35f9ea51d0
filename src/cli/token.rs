//! The admin bearer token (`[grpc] token_file`, `[http] token_file`): a secret the operator
//! keeps in a file, sent by the CLI as `authorization: Bearer <token>` and compared in
//! constant time.

use std::path::Path;

use anyhow::Context;
use subtle::ConstantTimeEq;

/// The environment variable the CLI reads the token from when `--token-file` is not given.
pub const TOKEN_ENV: &str = "STRATA_ADMIN_TOKEN";

/// A token read from its file.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The file's content without surrounding whitespace (a trailing newline is usual).
    pub fn load(path: &Path) -> anyhow::Result<AdminToken> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        AdminToken::new(text.trim()).with_context(|| path.display().to_string())
    }

    pub fn new(token: &str) -> anyhow::Result<AdminToken> {
        if token.is_empty() {
            anyhow::bail!("the token is empty");
        }
        // It travels in an HTTP header: visible ASCII only.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!("the token must be printable ASCII without spaces");
        }
        Ok(AdminToken(token.to_owned()))
    }

    /// The `authorization` header's value that carries it.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `authorization` header's value carries this token.
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(presented) = header.and_then(|value| value.strip_prefix(b"Bearer ")) else { return false };
        presented.ct_eq(self.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_as_a_bearer_header_is_admitted() {
        let token = AdminToken::new("s3cr3t-token").unwrap();
        assert!(token.admits(Some(b"Bearer s3cr3t-token")));
        assert!(!token.admits(Some(b"Bearer s3cr3t-tokeN")));
        assert!(!token.admits(Some(b"Bearer s3cr3t-token ")));
        assert!(!token.admits(Some(b"Bearer s3cr3t")));
        assert!(!token.admits(Some(b"s3cr3t-token")));
        assert!(!token.admits(Some(b"Basic s3cr3t-token")));
        assert!(!token.admits(None));
        assert!(AdminToken::new("").is_err());
        assert!(AdminToken::new("two words").is_err());
    }
}
