//! User accounts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::Error;

/// A user's stable public identifier (`usr_` + 128 random bits). Not a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn generate() -> Result<Self, Error> {
        crate::secret::random_public_id("usr_").map(Self)
    }

    /// Wraps a stored id.
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lookups by `&str` (a token's `sub`) without allocating: the derived `Hash` and `Eq` of the
/// wrapped `String` agree with `str`'s.
impl std::borrow::Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A login name: NFKC-normalized and lower-cased, so `Alice` and `alice` are one account; 1 to 64
/// characters, letters, digits and `. _ - @ +` (so an e-mail address works as a username).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, Error> {
        use unicode_normalization::UnicodeNormalization;
        let normalized: String = raw.nfkc().collect::<String>().to_lowercase();
        let count = normalized.chars().count();
        if count == 0 {
            return Err(Error::invalid("username", "must not be empty"));
        }
        if count > Self::MAX_CHARS {
            return Err(Error::invalid(
                "username",
                format!("must be at most {} characters long", Self::MAX_CHARS),
            ));
        }
        if let Some(bad) = normalized
            .chars()
            .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+')))
        {
            return Err(Error::invalid(
                "username",
                format!(
                    "may contain only letters, digits and . _ - @ + (found {:?})",
                    bad
                ),
            ));
        }
        // "аlice" with a Cyrillic "а" must not pass for "alice": one script per name (digits and
        // punctuation go with any).
        if !unicode_security::MixedScript::is_single_script(normalized.as_str()) {
            return Err(Error::invalid(
                "username",
                "must not mix letters of different scripts (such as Latin and Cyrillic)",
            ));
        }
        Ok(Self(normalized))
    }

    /// Wraps a stored, already normalized username.
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account as the store keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl User {
    /// Whether the account may use any credential: a disabled account keeps its data but can
    /// neither log in nor use the sessions and tokens it already holds.
    pub fn is_active(&self) -> bool {
        !self.disabled
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalized() {
        assert_eq!(Username::parse("Alice").unwrap().as_str(), "alice");
        assert_eq!(Username::parse("ＡＬＩＣＥ").unwrap().as_str(), "alice");
        assert_eq!(
            Username::parse("bob.smith+x@example.com").unwrap().as_str(),
            "bob.smith+x@example.com"
        );
        assert_eq!(Username::parse("Zoë").unwrap().as_str(), "zoë");
        assert!(Username::parse("иван.petrov").is_err());
        assert_eq!(Username::parse("иван_1990").unwrap().as_str(), "иван_1990");
        assert_eq!(Username::parse("山田-2").unwrap().as_str(), "山田-2");
    }

    #[test]
    fn bad_usernames_are_refused() {
        for bad in [
            "",
            "a b",
            "a/b",
            "tab\t",
            "x".repeat(65).as_str(),
            "semi;colon",
            "quote'",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn debug_hides_the_hash() {
        let u = User {
            id: UserId::from_stored("usr_x".into()),
            username: Username::parse("a").unwrap(),
            password_hash: "$argon2id$secret".into(),
            roles: vec![],
            disabled: false,
            created_at: Timestamp::from_unix_millis(0),
            updated_at: Timestamp::from_unix_millis(0),
        };
        assert!(!format!("{u:?}").contains("argon2id"));
    }
}
