//! Users' email addresses and the single-use codes mailed to them (account recovery, address
//! verification).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::Error;
use crate::secret::TokenHash;
use crate::user::UserId;

/// An email address in the form mail goes to, with the key it is compared by (lower-cased), so
/// `Alice@Example.org` and `alice@example.org` are one address, unique per deployment.
///
/// Only the form every mail server takes is accepted: `local@domain`, where the local part is an
/// ASCII dot-atom (letters, digits and ``!#$%&'*+/=?^_`{|}~-``, dots between them: other
/// characters need SMTPUTF8, which not every server speaks) and the domain has at least two labels.
/// An internationalized domain is kept in its ASCII form (`exämple.org` is `xn--exmple-cua.org`),
/// so both spellings of one mailbox are one address. Quoted local parts, IP-literal domains and
/// comments are refused.
///
/// ```
/// use tessera_core::EmailAddress;
///
/// let address = EmailAddress::parse(" Alice@Example.org ")?;
/// assert_eq!(address.as_str(), "Alice@example.org");
/// assert_eq!(address.key(), "alice@example.org");
/// assert_eq!(address, EmailAddress::parse("alice@EXAMPLE.org")?);
/// assert_eq!(EmailAddress::parse("a@exämple.org")?.as_str(), "a@xn--exmple-cua.org");
/// assert!(EmailAddress::parse("alice").is_err());
/// assert!(EmailAddress::parse("alice@localhost").is_err());
/// assert!(EmailAddress::parse("\"a b\"@example.org").is_err());
/// assert!(EmailAddress::parse("ȧlice@example.org").is_err());
/// # Ok::<(), tessera_core::Error>(())
/// ```
#[derive(Clone, Eq)]
pub struct EmailAddress {
    address: String,
    key: String,
}

impl EmailAddress {
    /// The longest address, in bytes (RFC 5321's limit on a path, less the angle brackets).
    pub const MAX_LEN: usize = 254;

    /// Checks and normalizes an address as typed; [`Error::Invalid`] (field `email`) says what is
    /// wrong with it.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        use unicode_normalization::UnicodeNormalization;
        let typed: String = raw.trim().nfkc().collect();
        let invalid = |why: &str| Error::invalid("email", why.to_owned());
        if typed.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if typed.len() > 4 * Self::MAX_LEN {
            return Err(invalid("must be at most 254 bytes long"));
        }
        let Some((local, domain)) = typed.rsplit_once('@') else {
            return Err(invalid("must be an address of the form name@example.org"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(invalid("the part before @ must be 1 to 64 characters long"));
        }
        let atom_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
        if local
            .split('.')
            .any(|atom| atom.is_empty() || !atom.chars().all(atom_char))
        {
            return Err(invalid(
                "the part before @ may contain only ASCII letters, digits, !#$%&'*+/=?^_`{|}~- and single dots between them",
            ));
        }
        if !unicode_security::MixedScript::is_single_script(domain) {
            return Err(invalid(
                "the domain must not mix letters of different scripts (such as Latin and Cyrillic)",
            ));
        }
        let bad_domain = || invalid("the part after @ must be a domain name such as example.org");
        if domain.is_empty() || domain.ends_with('.') {
            return Err(bad_domain());
        }
        // UTS 46: the ASCII form of an internationalized domain, lower-cased.
        let domain = idna::domain_to_ascii(domain).map_err(|_| bad_domain())?;
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |label: &&str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(bad_domain());
        }
        let address = format!("{local}@{domain}");
        if address.len() > Self::MAX_LEN {
            return Err(invalid("must be at most 254 bytes long"));
        }
        let key = address.to_ascii_lowercase();
        Ok(Self { address, key })
    }

    /// Rebuilds an address read back from the store, checked when it was written.
    pub fn from_stored(address: String) -> Self {
        let key = address.to_lowercase();
        Self { address, key }
    }

    /// The address as the user gave it (the domain in its ASCII, lower-case form): where mail
    /// goes, and what the user and admins see.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The comparison key (lower-cased): what uniqueness and lookups use.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl PartialEq for EmailAddress {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Logs show the domain only: an address is personal data.
        let domain = self.key.rsplit_once('@').map_or("", |(_, d)| d);
        write!(f, "EmailAddress(…@{domain})")
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.address)
    }
}

/// A user's address and whether it was shown to be theirs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserEmail {
    /// The address.
    pub address: EmailAddress,
    /// Whether the user proved it is theirs (a verification code, or a recovery code, mailed to
    /// it came back). A new or changed address starts unverified.
    pub verified: bool,
}

/// What a [`OneTimeCode`](crate::OneTimeCode) is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodePurpose {
    /// Sets a new password without the old one, and ends every login of the account.
    Recovery,
    /// Marks the address it was sent to as verified, if it is still the account's address.
    VerifyEmail,
}

impl CodePurpose {
    /// The name stores persist (`recovery`, `verify_email`).
    pub fn as_str(self) -> &'static str {
        match self {
            CodePurpose::Recovery => "recovery",
            CodePurpose::VerifyEmail => "verify_email",
        }
    }

    /// The purpose named by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "recovery" => Some(CodePurpose::Recovery),
            "verify_email" => Some(CodePurpose::VerifyEmail),
            _ => None,
        }
    }
}

/// A mailed code as the store keeps it: its hash, never the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountCode {
    /// SHA-256 of the code.
    pub hash: TokenHash,
    /// Whose it is.
    pub user_id: UserId,
    /// What it does.
    pub purpose: CodePurpose,
    /// The comparison key ([`EmailAddress::key`]) of the address it was mailed to: a
    /// verification code verifies that address only, and only while the account still has it.
    pub email_key: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// After this it is refused.
    pub expires_at: Timestamp,
}

/// What using a verification code did ([`crate::UserStore::use_verification_code`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeVerified {
    /// The account the code was for.
    pub user: UserId,
    /// Whether the address the code was mailed to is still the account's, and so is now
    /// verified; `false` when the address was changed since (nothing was changed then).
    pub still_current: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_addresses_are_taken() {
        for good in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "o'brien@example.ie",
            "a@例子.广告",
            "x_y-z@xn--bcher-kva.example",
            "ＡＬＩＣＥ@example.org",
        ] {
            assert!(EmailAddress::parse(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn malformed_addresses_are_refused() {
        let long_local = format!("{}@example.org", "a".repeat(65));
        let long = format!("a@{}.org", "b".repeat(260));
        for bad in [
            "",
            "plain",
            "@example.org",
            "a@",
            "a@b",
            "a..b@example.org",
            ".a@example.org",
            "a.@example.org",
            "a b@example.org",
            "a@-example.org",
            "a@example-.org",
            "a@exa mple.org",
            "a@[127.0.0.1]",
            "a@example..org",
            "<a@example.org>",
            "a@example.org\r\nBcc: x@example.org",
            "\u{430}lice@example.org",
            "用户@example.org",
            "ȧlice@example.org",
            "a@ex\u{430}mple.org",
            "a@example.org.",
            long_local.as_str(),
            long.as_str(),
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn addresses_compare_by_their_key_and_debug_hides_the_local_part() {
        let a = EmailAddress::parse("ALICE@Example.ORG").unwrap();
        assert_eq!(a.as_str(), "ALICE@example.org");
        assert_eq!(a.key(), "alice@example.org");
        assert_eq!(a, EmailAddress::from_stored("alice@example.org".into()));
        assert_eq!(format!("{a:?}"), "EmailAddress(…@example.org)");
        let fullwidth = EmailAddress::parse("ａlice@example.org").unwrap();
        assert_eq!(fullwidth.key(), "alice@example.org");
        // One mailbox, two spellings of its domain: one address.
        assert_eq!(
            EmailAddress::parse("alice@exämple.org").unwrap(),
            EmailAddress::parse("alice@xn--exmple-cua.org").unwrap()
        );
    }
}
