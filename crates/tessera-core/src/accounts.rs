//! Accounts: registration and checking credentials.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Timestamp};
use crate::email::{EmailAddress, UserEmail};
use crate::error::{Error, StoreError};
use crate::password::{Password, PasswordHasher, PasswordPolicy, Verification};
use crate::store::{UserDeletion, UserStore};
use crate::user::{User, UserId, Username};

/// The answer when an address belongs to another account. It names no account.
fn email_taken() -> Error {
    Error::Conflict("the email address is in use by another account".into())
}

/// Who may create an account through `POST /v1/users`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone may register (the default).
    #[default]
    Open,
    /// Self-service registration answers [`Error::RegistrationClosed`]; accounts are created
    /// only through [`Accounts::create`] (operators, admins).
    Closed,
}

/// What a login with the right password but an unverified address gets, when verified
/// addresses are required.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnverifiedLogins {
    /// Refused with [`Error::EmailNotVerified`] (the default).
    #[default]
    Refuse,
    /// Allowed; `/v1/me` and the access token's claims say `email_verified: false`, for the
    /// application to decide.
    Allow,
}

/// The settings of [`Accounts`], built by the binary from its `[accounts]` configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountsConfig {
    /// Whether self-service registration is open.
    pub registration: Registration,
    /// What a new password must meet, at registration and on a password change.
    pub password_policy: PasswordPolicy,
    /// Whether every account must have an email address it proved is its own: registration asks
    /// for one, and logins until it is verified get what `unverified_logins` says.
    pub require_verified_email: bool,
    /// With `require_verified_email`: refuse logins of unverified accounts, or allow them with
    /// `email_verified: false`.
    pub unverified_logins: UnverifiedLogins,
}

impl AccountsConfig {
    /// Checks the values; an error names the field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.password_policy.validate()
    }
}

/// The account service.
#[derive(Clone)]
pub struct Accounts {
    users: Arc<dyn UserStore>,
    hasher: PasswordHasher,
    clock: Arc<dyn Clock>,
    config: AccountsConfig,
}

impl Accounts {
    /// An account service over `users`; `hasher` bounds the argon2 work, `clock` stamps
    /// `created_at` and `updated_at`.
    pub fn new(
        users: Arc<dyn UserStore>,
        hasher: PasswordHasher,
        clock: Arc<dyn Clock>,
        config: AccountsConfig,
    ) -> Self {
        Self {
            users,
            hasher,
            clock,
            config,
        }
    }

    /// Self-service registration, refused when registration is closed. `email` is required when
    /// verified addresses are (`require_verified_email`); it starts unverified.
    pub async fn register(
        &self,
        username: &str,
        password: &Password,
        email: Option<&str>,
    ) -> Result<User, Error> {
        if self.config.registration == Registration::Closed {
            return Err(Error::RegistrationClosed);
        }
        if self.config.require_verified_email && email.is_none() {
            return Err(Error::invalid(
                "email",
                "is required: this server asks every account for an email address it can verify",
            ));
        }
        self.create_with_email(username, password, Vec::new(), email)
            .await
    }

    /// The settings the service runs with.
    pub fn config(&self) -> &AccountsConfig {
        &self.config
    }

    /// Creates an account whatever the registration setting (operators, admins).
    pub async fn create(
        &self,
        username: &str,
        password: &Password,
        roles: Vec<String>,
    ) -> Result<User, Error> {
        self.create_with_email(username, password, roles, None)
            .await
    }

    /// Creates an account with an (unverified) email address, whatever the registration setting.
    #[tracing::instrument(skip(self, password, email))]
    pub async fn create_with_email(
        &self,
        username: &str,
        password: &Password,
        roles: Vec<String>,
        email: Option<&str>,
    ) -> Result<User, Error> {
        let username = Username::parse(username)?;
        let email = email.map(EmailAddress::parse).transpose()?;
        self.config.password_policy.check(password)?;
        if self.users.user_by_username(&username).await?.is_some() {
            return Err(Error::Conflict(format!(
                "the username \"{username}\" is taken"
            )));
        }
        if let Some(email) = &email
            && self.users.user_by_email(email.key()).await?.is_some()
        {
            return Err(email_taken());
        }
        let password_hash = self.hasher.hash(password).await?;
        let now = self.clock.now();
        let user = User {
            id: UserId::generate()?,
            username,
            password_hash,
            roles,
            disabled: false,
            created_at: now,
            updated_at: now,
            not_before: now,
            email: email.map(|address| UserEmail {
                address,
                verified: false,
            }),
        };
        match self.users.create_user(&user).await {
            Ok(()) => {
                tracing::info!(user = %user.id, "user created");
                Ok(user)
            }
            // Lost a race with another registration of the same name or address.
            Err(StoreError::Conflict(_)) => {
                if let Some(email) = &user.email
                    && self
                        .users
                        .user_by_email(email.address.key())
                        .await?
                        .is_some()
                {
                    return Err(email_taken());
                }
                Err(Error::Conflict(format!(
                    "the username \"{}\" is taken",
                    user.username
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a username and password. An unknown user, a wrong password and a disabled account
    /// all give [`Error::InvalidCredentials`] after the same argon2 work (a dummy hash stands in
    /// for the missing user). Rehashes the password when the hashing parameters changed.
    #[tracing::instrument(skip(self, password))]
    pub async fn authenticate(&self, username: &str, password: &Password) -> Result<User, Error> {
        // A name that cannot exist still costs a hash, so its answer takes as long as any other.
        let user = match Username::parse(username) {
            Ok(name) => self.users.user_by_username(&name).await?,
            Err(_) => None,
        };
        let verification = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        match (user, verification) {
            (Some(user), Verification::Valid { rehash }) if user.is_active() => {
                // Only once the password is known to be right: the refusal tells nothing to
                // someone who does not have it.
                if self.refuses_unverified(&user) {
                    return Err(Error::EmailNotVerified);
                }
                // Only if the hash is still the one just checked: a password changed while this
                // login was being checked is never reverted to the old one.
                if let Some(new_hash) = rehash
                    && self
                        .users
                        .rehash_password(&user.id, &user.password_hash, &new_hash)
                        .await?
                {
                    tracing::info!(user = %user.id, "password rehashed with the current parameters");
                }
                Ok(user)
            }
            _ => Err(Error::InvalidCredentials),
        }
    }

    /// Whether a login of `user` is refused for want of a verified address.
    pub fn refuses_unverified(&self, user: &User) -> bool {
        self.config.require_verified_email
            && self.config.unverified_logins == UnverifiedLogins::Refuse
            && !user.email.as_ref().is_some_and(|e| e.verified)
    }

    /// The account whose address is `email` (compared by its key); `None` also when `email` is
    /// not an address at all.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        match EmailAddress::parse(email) {
            Ok(address) => Ok(self.users.user_by_email(address.key()).await?),
            Err(_) => Ok(None),
        }
    }

    /// Sets, changes or (with `None`) removes the account's address; a new one starts
    /// unverified. [`Error::Conflict`] when another account has it. `false` when there is no such
    /// user.
    pub async fn set_email(
        &self,
        id: &UserId,
        email: Option<&EmailAddress>,
    ) -> Result<bool, Error> {
        match self.users.set_email(id, email).await {
            Ok(set) => Ok(set),
            Err(StoreError::Conflict(_)) => Err(email_taken()),
            Err(e) => Err(e.into()),
        }
    }

    /// The account with this id, disabled or not; `None` when there is none.
    pub async fn user(&self, id: &UserId) -> Result<Option<User>, Error> {
        Ok(self.users.user_by_id(id).await?)
    }

    /// The account with this username, disabled or not; `None` also when `username` is not a
    /// valid username at all.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, Error> {
        match Username::parse(username) {
            Ok(name) => Ok(self.users.user_by_username(&name).await?),
            Err(_) => Ok(None),
        }
    }

    /// Checks the account's current password (a wrong one is [`Error::WrongCurrentPassword`]):
    /// what a destructive change to one's own account asks for, beyond a session or token.
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn check_password(&self, user: &User, password: &Password) -> Result<(), Error> {
        match self
            .hasher
            .verify(password, Some(&user.password_hash))
            .await?
        {
            Verification::Valid { .. } => Ok(()),
            Verification::Invalid => Err(Error::WrongCurrentPassword),
        }
    }

    /// Checks a new password against the policy, naming `field` in the refusal.
    pub fn check_new_password(
        &self,
        password: &Password,
        field: &'static str,
    ) -> Result<(), Error> {
        self.config
            .password_policy
            .check(password)
            .map_err(|e| match e {
                Error::Invalid { message, .. } => Error::Invalid { field, message },
                other => other,
            })
    }

    /// The argon2id hash of a new password, off the async workers.
    pub async fn hash_password(&self, password: &Password) -> Result<String, Error> {
        self.hasher.hash(password).await
    }

    /// Checks a password against the account's hash, off the async workers.
    pub async fn verify_password(
        &self,
        user: &User,
        password: &Password,
    ) -> Result<Verification, Error> {
        self.hasher
            .verify(password, Some(&user.password_hash))
            .await
    }

    /// Erases an account and everything of it the user store holds (see
    /// [`UserStore::delete_user`]); `false` when it was already gone.
    pub async fn erase(&self, deletion: &UserDeletion) -> Result<bool, Error> {
        Ok(self.users.delete_user(deletion).await?)
    }

    /// Replaces a password after checking the current one (a wrong current password is
    /// [`Error::WrongCurrentPassword`]). The new one must meet the policy and differ.
    #[tracing::instrument(skip_all, fields(user = %user.id))]
    pub async fn change_password(
        &self,
        user: &User,
        current: &Password,
        new: &Password,
    ) -> Result<(), Error> {
        match self
            .hasher
            .verify(current, Some(&user.password_hash))
            .await?
        {
            Verification::Valid { .. } => {}
            Verification::Invalid => {
                return Err(Error::WrongCurrentPassword);
            }
        }
        self.config
            .password_policy
            .check(new)
            .map_err(|e| match e {
                Error::Invalid { message, .. } => Error::Invalid {
                    field: "new_password",
                    message,
                },
                other => other,
            })?;
        if matches!(
            self.hasher.verify(new, Some(&user.password_hash)).await?,
            Verification::Valid { .. }
        ) {
            return Err(Error::invalid(
                "new_password",
                "must differ from the current password",
            ));
        }
        let hash = self.hasher.hash(new).await?;
        if !self
            .users
            .set_password_hash(&user.id, &hash, self.clock.now())
            .await?
        {
            return Err(Error::Unauthenticated);
        }
        tracing::info!("password changed");
        Ok(())
    }

    /// Sets a new password without the current one (an operator or admin resetting it). The new
    /// one must meet the policy, as at registration. Moves the account's `not_before`, so logins
    /// being made meanwhile are void. `false` when there is no such user.
    #[tracing::instrument(skip_all, fields(user = %id))]
    pub async fn set_password(&self, id: &UserId, new: &Password) -> Result<bool, Error> {
        self.config.password_policy.check(new)?;
        let hash = self.hasher.hash(new).await?;
        let set = self
            .users
            .set_password_hash(id, &hash, self.clock.now())
            .await?;
        if set {
            tracing::info!("password set");
        }
        Ok(set)
    }

    /// Up to `limit` accounts in username order, after `after`.
    pub async fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<User>, Error> {
        let after = after.map(Username::parse).transpose()?;
        Ok(self.users.list_users(after.as_ref(), limit).await?)
    }

    /// `false` when there is no such user.
    pub async fn set_disabled(&self, id: &UserId, disabled: bool) -> Result<bool, Error> {
        Ok(self
            .users
            .set_user_disabled(id, disabled, self.clock.now())
            .await?)
    }

    /// Voids every login of `id` whose credential check began before `at` (a forced logout).
    /// `false` when there is no such user.
    pub async fn set_not_before(&self, id: &UserId, at: Timestamp) -> Result<bool, Error> {
        Ok(self.users.set_user_not_before(id, at).await?)
    }

    /// Replaces a user's roles (names of 1–32 characters: letters, digits, `-`, `_`, `.`, `:`).
    /// `false` when there is no such user.
    pub async fn set_roles(&self, id: &UserId, roles: &[String]) -> Result<bool, Error> {
        for role in roles {
            let ok = (1..=32).contains(&role.len())
                && role
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
            if !ok {
                return Err(Error::invalid(
                    "roles",
                    format!("{role:?} is not a role name (1-32 of letters, digits, - _ . :)"),
                ));
            }
        }
        let mut unique: Vec<String> = roles.to_vec();
        unique.sort();
        unique.dedup();
        Ok(self
            .users
            .set_user_roles(id, &unique, self.clock.now())
            .await?)
    }
}
