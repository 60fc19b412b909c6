//! User accounts.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::Timestamp;
use crate::error::Error;

/// A user's stable public identifier (`usr_` + 128 random bits). Not a secret. Deserializing
/// checks the shape, so an access token's `sub` is a well-formed id or the token is refused.
///
/// Shared rather than copied: every session, token family and cached account of a user can hold
/// the one allocation, so a clone costs a reference count, not a string. A thin pointer (the
/// `Box` inside the `Arc`): 8 bytes in every session rather than 16.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<Box<str>>);

impl UserId {
    const PREFIX: &str = "usr_";

    /// A new random id, for a new account; fails only if the system's random source does.
    pub fn generate() -> Result<Self, Error> {
        crate::secret::random_public_id(Self::PREFIX).map(Self::from_stored)
    }

    /// An id from outside (a URL): `None` unless it has the shape of the ids we generate, so no
    /// lookup is made for one that cannot exist.
    ///
    /// ```
    /// use tessera_core::UserId;
    ///
    /// let id = UserId::generate()?;
    /// assert!(id.as_str().starts_with("usr_"));
    /// assert_eq!(UserId::parse(id.as_str()), Some(id.clone()));
    /// assert_eq!(UserId::parse("usr_../../etc/passwd"), None);
    /// assert_eq!(UserId::parse("alice"), None);
    /// # Ok::<(), tessera_core::Error>(())
    /// ```
    pub fn parse(text: &str) -> Option<Self> {
        crate::secret::is_public_id(text, Self::PREFIX).then(|| Self(Arc::new(text.into())))
    }

    /// Wraps an id read back from the store, which holds only ids we generated: not checked
    /// again.
    pub fn from_stored(id: String) -> Self {
        Self(Arc::new(id.into_boxed_str()))
    }

    /// The id as stored, listed and carried in tokens' `sub` (`usr_…`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` and `other` hold the very same allocation (not just equal text).
    pub fn shares_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::secret::deserialize_public_id(deserializer, Self::PREFIX).map(Self::from_stored)
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
    /// The longest username, in characters after normalization.
    pub const MAX_CHARS: usize = 64;

    /// Normalizes and checks a username as typed; [`Error::Invalid`] (field `username`) says
    /// which rule it breaks. Look accounts up only by the result, never by the raw text.
    ///
    /// ```
    /// use tessera_core::Username;
    ///
    /// let name = Username::parse("Alice@Example.org")?;
    /// assert_eq!(name.as_str(), "alice@example.org");
    /// assert_eq!(Username::parse("ALICE@example.ORG")?, name);
    /// assert!(Username::parse("").is_err());
    /// assert!(Username::parse("alice smith").is_err());
    /// // A Cyrillic "а" among Latin letters is refused, not taken for "alice".
    /// assert!(Username::parse("\u{430}lice").is_err());
    /// // A capital that lowercases to a letter composing with the next one: composed, once.
    /// let greek = Username::parse("\u{389}\u{345}\u{345}")?;
    /// assert_eq!(greek.as_str(), "\u{1fc4}\u{345}");
    /// assert_eq!(Username::parse(greek.as_str())?, greek);
    /// # Ok::<(), tessera_core::Error>(())
    /// ```
    pub fn parse(raw: &str) -> Result<Self, Error> {
        use unicode_normalization::UnicodeNormalization;
        // Lowercasing can undo the normal form (a capital with an accent lowercases to a letter
        // that composes with what follows it), so both are applied until neither changes the
        // name: parsing a parsed name gives it back.
        let mut normalized: String = raw.nfkc().collect();
        let mut stable = false;
        for _ in 0..4 {
            let next: String = normalized.to_lowercase().nfkc().collect();
            if next == normalized {
                stable = true;
                break;
            }
            normalized = next;
        }
        if !stable {
            return Err(Error::invalid(
                "username",
                "has no stable normal form (NFKC and lower case)",
            ));
        }
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

    /// Wraps a username read back from the store, normalized when it was written: not checked
    /// again.
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// The normalized name, as stored and shown.
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
    /// The stable id; never reused or changed.
    pub id: UserId,
    /// The login name, unique among accounts.
    pub username: Username,
    /// The argon2id hash as a PHC string (parameters and salt included, so a hash made with older
    /// parameters still verifies and is upgraded at the next login). Never the password; and
    /// `Debug` prints `<redacted>` in its place.
    pub password_hash: String,
    /// Role names (sorted, no duplicates when set by an admin), carried in access tokens for
    /// resource servers to authorize by; `admin` opens Tessera's admin API.
    pub roles: Vec<String>,
    /// A disabled account can use no credential; see [`User::is_active`].
    pub disabled: bool,
    /// When the account was created.
    pub created_at: Timestamp,
    /// The last change of password, roles or the disabled flag.
    pub updated_at: Timestamp,
    /// Every login whose credential check began before this time is void: moved on by a password
    /// change, a role change, disabling or enabling, and a forced logout, so that a login racing
    /// one of them (it checked the old password while the change was being made) does not
    /// outlive it.
    pub not_before: Timestamp,
    /// The account's email address and whether it is verified; `None` when it has none. Shown
    /// only to the user and to admins.
    pub email: Option<crate::email::UserEmail>,
}

impl User {
    /// The account's `not_before` after a change at `at`: `at`, or, when it already is at or
    /// after `at`, one millisecond later. It never moves back, and every change moves it, even two
    /// in one millisecond, so a login that read the account before a change always sees that it
    /// moved. Every store applies this rule in the same write as the change.
    pub fn moved_not_before(current: Timestamp, at: Timestamp) -> Timestamp {
        if current >= at {
            Timestamp::from_unix_millis(current.unix_millis().saturating_add(1))
        } else {
            at
        }
    }

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
            .field("not_before", &self.not_before)
            .field("email", &self.email)
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
    fn user_ids_parse_only_in_the_shape_we_generate() {
        let id = UserId::generate().unwrap();
        assert_eq!(UserId::parse(id.as_str()), Some(id.clone()));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""), "serialized as the bare string");
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
        let random = &id.as_str()[4..];
        for bad in [
            String::new(),
            "usr_".into(),
            "usr_nobody".into(),
            format!("fam_{random}"),
            format!("USR_{random}"),
            format!("usr_{random}A"),
            format!("usr_{}", &random[1..]),
            format!("usr_{}+", &random[1..]),
            format!(" usr_{random}"),
            // 22 characters whose last one carries bits past the 128th.
            "usr_AAAAAAAAAAAAAAAAAAAAAB".into(),
        ] {
            assert_eq!(UserId::parse(&bad), None, "{bad:?} parsed");
            let json = serde_json::to_string(&bad).unwrap();
            assert!(serde_json::from_str::<UserId>(&json).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_hash() {
        let u = User {
            id: UserId::generate().unwrap(),
            username: Username::parse("a").unwrap(),
            password_hash: "$argon2id$secret".into(),
            roles: vec![],
            disabled: false,
            created_at: Timestamp::from_unix_millis(0),
            updated_at: Timestamp::from_unix_millis(0),
            not_before: Timestamp::from_unix_millis(0),
            email: None,
        };
        assert!(!format!("{u:?}").contains("argon2id"));
    }
}
