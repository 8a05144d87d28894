//! API keys and roles: the rules the server enforces, kept in the library so every edge (the
//! HTTP server, tests, tools) applies the same ones.
//!
//! A key is `clk_` followed by 32 random bytes in unpadded base64url (47 characters). It is
//! shown once, when created; the store keeps only its SHA-256 ([`key_hash`]), so a leaked
//! database does not leak usable keys. Hashes are compared in constant time ([`hashes_equal`]).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix of every key: it makes a leaked key recognisable (secret scanners, logs).
pub const KEY_PREFIX: &str = "clk_";
/// Length of a key: the prefix and 43 base64url characters (32 bytes, unpadded).
pub const KEY_LEN: usize = 47;
const KEY_RANDOM_BYTES: usize = 32;

/// What a key may do. Ordered: `Read < Write < Admin`, and a role allows everything a lesser
/// one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// `read`, `write` or `admin` (any case).
    pub fn parse(s: &str) -> Result<Role, AuthError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| AuthError::InvalidRole(s.to_string()))
    }

    /// True when this role may do what `needed` may.
    pub fn allows(&self, needed: Role) -> bool {
        *self >= needed
    }

    /// `Ok` when this role allows `needed`, else [`AuthError::Forbidden`].
    pub fn require(&self, needed: Role) -> Result<(), AuthError> {
        if self.allows(needed) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                needed,
                have: *self,
            })
        }
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A freshly generated key: the plaintext is shown once, only the hash is stored.
#[derive(Clone)]
pub struct GeneratedKey {
    pub plaintext: String,
    pub hash: String,
}

/// Never prints the plaintext, so a key cannot reach a log through `{:?}`.
impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("plaintext", &"clk_***")
            .field("hash", &self.hash)
            .finish()
    }
}

/// A new random key (from the operating system-seeded CSPRNG) and its hash.
pub fn key_generate() -> GeneratedKey {
    let bytes: [u8; KEY_RANDOM_BYTES] = rand::random();
    let plaintext = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = key_hash(&plaintext);
    GeneratedKey { plaintext, hash }
}

/// The stored form of a key: lowercase hex SHA-256 of its plaintext. Keys are 256 random bits,
/// so a fast unsalted hash is enough (there is nothing to guess from a dictionary).
pub fn key_hash(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// True for `clk_` followed by exactly 43 base64url characters.
pub fn key_is_well_formed(s: &str) -> bool {
    s.len() == KEY_LEN
        && s.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Compares two hashes in time independent of where they differ, so response timing does not
/// reveal how much of a guessed hash was right.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Parses an `Authorization` header value: exactly "Bearer <key>" (the word `Bearer`, one
/// space, a well-formed key). An empty value is [`AuthError::MissingKey`]; anything else that
/// does not fit is [`AuthError::MalformedKey`].
pub fn bearer_key(header: &str) -> Result<&str, AuthError> {
    if header.trim().is_empty() {
        return Err(AuthError::MissingKey);
    }
    match header.strip_prefix("Bearer ") {
        Some(key) if key_is_well_formed(key) => Ok(key),
        _ => Err(AuthError::MalformedKey),
    }
}

/// Why a request is not authenticated or not allowed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key: send 'Authorization: Bearer <key>'")]
    MissingKey,
    #[error(
        "malformed API key: send 'Authorization: Bearer <key>' (the word Bearer, one space, then the 47-character key starting with 'clk_')"
    )]
    MalformedKey,
    #[error("invalid API key: no such key exists; check the key, or ask an administrator for one")]
    UnknownKey,
    #[error("this API key was revoked; ask an administrator for a new one")]
    RevokedKey,
    #[error("invalid role '{0}': expected read, write or admin")]
    InvalidRole(String),
    #[error("this needs the '{needed}' role, and the API key has the '{have}' role")]
    Forbidden { needed: Role, have: Role },
    #[error("this API key may not act in tenant '{tenant}'")]
    WrongTenant { tenant: String },
}

impl crate::error::ErrorCode for AuthError {
    fn code(&self) -> &'static str {
        match self {
            AuthError::MissingKey => "missing_api_key",
            AuthError::MalformedKey => "malformed_api_key",
            AuthError::UnknownKey => "invalid_api_key",
            AuthError::RevokedKey => "revoked_api_key",
            AuthError::InvalidRole(_) => "invalid_role",
            AuthError::Forbidden { .. } => "insufficient_role",
            AuthError::WrongTenant { .. } => "tenant_forbidden",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorCode, ErrorKind};

    #[test]
    fn generated_keys_are_47_url_safe_chars_and_distinct() {
        let a = key_generate();
        let b = key_generate();
        assert_eq!(a.plaintext.len(), 47);
        assert!(a.plaintext.starts_with("clk_"));
        assert!(key_is_well_formed(&a.plaintext), "{}", a.plaintext);
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(a.hash, key_hash(&a.plaintext));
        assert!(!format!("{a:?}").contains(&a.plaintext));
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn well_formed_keys() {
        let body = "A".repeat(43);
        assert!(key_is_well_formed(&format!("clk_{body}")));
        assert!(key_is_well_formed(&format!("clk_{}-_", "x".repeat(41))));
        assert!(!key_is_well_formed(&format!("clk_{}", "A".repeat(42))));
        assert!(!key_is_well_formed(&format!("clk_{}", "A".repeat(44))));
        assert!(!key_is_well_formed(&format!("clx_{body}")));
        assert!(!key_is_well_formed(&format!("clk_{}=", "A".repeat(42))));
        assert!(!key_is_well_formed(&format!("clk_{}+", "A".repeat(42))));
        assert!(!key_is_well_formed(&format!("clk_{}é", "A".repeat(41))));
        assert!(!key_is_well_formed(""));
    }

    #[test]
    fn hashes_compare_exactly() {
        let h = key_hash("x");
        assert!(hashes_equal(&h, &key_hash("x")));
        assert!(!hashes_equal(&h, &key_hash("y")));
        assert!(!hashes_equal(&h, &h[..10]));
        assert!(hashes_equal("", ""));
    }

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
        assert!(Role::Admin.allows(Role::Read) && Role::Write.allows(Role::Write));
        assert!(!Role::Read.allows(Role::Write));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()).ok(), Some(r));
            assert_eq!(r.to_string().parse::<Role>().ok(), Some(r));
            assert_eq!(
                serde_json::to_string(&r).ok(),
                Some(format!("\"{}\"", r.as_str()))
            );
        }
        assert_eq!(Role::parse("ADMIN").ok(), Some(Role::Admin));
        let e = Role::parse("owner").err();
        assert!(matches!(&e, Some(AuthError::InvalidRole(s)) if s == "owner"));
        assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::Invalid));
        let e = Role::Read.require(Role::Admin).err();
        assert!(matches!(
            e,
            Some(AuthError::Forbidden {
                needed: Role::Admin,
                have: Role::Read
            })
        ));
        assert!(Role::Admin.require(Role::Write).is_ok());
    }

    #[test]
    fn bearer_header_is_exact() {
        let key = key_generate().plaintext;
        assert_eq!(
            bearer_key(&format!("Bearer {key}")).ok(),
            Some(key.as_str())
        );
        assert!(matches!(bearer_key(""), Err(AuthError::MissingKey)));
        assert!(matches!(bearer_key("  "), Err(AuthError::MissingKey)));
        for bad in [
            format!("bearer {key}"),
            format!("BEARER {key}"),
            format!("Bearer  {key}"),
            format!("Bearer\t{key}"),
            format!("Basic {key}"),
            format!("Bearer {key} "),
            key.clone(),
            "Bearer".to_string(),
            "Bearer ".to_string(),
            "Bearer clk_short".to_string(),
        ] {
            assert!(
                matches!(bearer_key(&bad), Err(AuthError::MalformedKey)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn auth_errors_are_401_or_403() {
        let kinds = |e: AuthError| (e.code(), e.kind().http_status(), e.kind().cli_exit_code());
        assert_eq!(kinds(AuthError::MissingKey), ("missing_api_key", 401, 4));
        assert_eq!(
            kinds(AuthError::MalformedKey),
            ("malformed_api_key", 401, 4)
        );
        assert_eq!(kinds(AuthError::UnknownKey), ("invalid_api_key", 401, 4));
        assert_eq!(kinds(AuthError::RevokedKey), ("revoked_api_key", 401, 4));
        assert_eq!(
            kinds(AuthError::Forbidden {
                needed: Role::Admin,
                have: Role::Read
            }),
            ("insufficient_role", 403, 4)
        );
        assert_eq!(
            kinds(AuthError::WrongTenant { tenant: "a".into() }),
            ("tenant_forbidden", 403, 4)
        );
        assert_eq!(
            kinds(AuthError::InvalidRole("x".into())),
            ("invalid_role", 400, 5)
        );
    }
}
