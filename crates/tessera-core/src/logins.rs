//! A user's logins across the three models — server sessions and refresh-token families (token and
//! hybrid): the one login pipeline every model goes through (throttle, check the credentials,
//! audit, start the login, keep the user within the cap), and the logins seen and ended together:
//! listing, logout, ending one or all others, password change, forced logout and disabling an
//! account, and deleting one. Also the login audit events.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::accounts::Accounts;
use crate::audit::{Audit, EventKind, NewEvent, SecurityEvent};
use crate::auth_context::{AuthContext, SecondFactorMethod};
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::password::Password;
use crate::second_factor::{FactorProof, LoginChallenge, Occasion, SecondFactors};
use crate::secret::{ChallengeSecret, RefreshToken, SessionId};
use crate::session::{ClientInfo, Session, SessionHandle, Sessions};
use crate::store::{RefreshStore, Stores, UserDeletion};
use crate::throttle::Throttle;
use crate::token::refresh::{FamilyId, LoginModel};
use crate::token::service::{TokenPair, Tokens};
use crate::user::{User, UserId};

/// One login as its owner (or an admin) sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoginInfo {
    /// A session handle (`ses_…`) or a refresh family id (`fam_…`).
    pub id: String,
    /// Which model the login belongs to.
    pub model: LoginModel,
    /// When the user logged in.
    pub created_at: Timestamp,
    /// Last recorded use: a session's last touch, a family's last refresh.
    pub last_seen_at: Timestamp,
    /// When the login ends unless used again: the earlier of its idle and absolute expiry.
    pub expires_at: Timestamp,
    /// The client's `User-Agent` at login, if it sent one.
    pub user_agent: Option<String>,
    /// The client's address at login, if known.
    pub ip: Option<String>,
    /// Whether this is the login the request came with.
    pub current: bool,
}

/// The login a request came with, so it can be told apart (and spared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CurrentLogin {
    /// The request came with this session (cookie).
    Session(SessionHandle),
    /// The request came with a token of this family (bearer or hybrid cookie).
    Family(FamilyId),
    /// The caller is not one of the user's logins (an admin acting on another user).
    None,
}

impl CurrentLogin {
    fn is(&self, id: &str) -> bool {
        match self {
            CurrentLogin::Session(h) => h.as_str() == id,
            CurrentLogin::Family(f) => f.as_str() == id,
            CurrentLogin::None => false,
        }
    }
}

/// A login request, whichever model it asks for.
pub struct LoginAttempt<'a> {
    /// The username as typed; it also names the account whose attempt budget is spent.
    pub username: &'a str,
    /// The password as typed.
    pub password: &'a Password,
    /// The client's address, whose attempt budget the login spends.
    pub ip: Option<IpAddr>,
    /// What the new login records about the client.
    pub client: ClientInfo,
    /// The device token the client holds from an earlier login, if any: a client that logged in
    /// to this account before keeps an attempt budget of its own.
    pub device: Option<&'a str>,
    /// The thumbprint of the DPoP key the request proved it holds (token model): the login's
    /// tokens are bound to it.
    pub dpop_jkt: Option<&'a str>,
}

/// A login of the session model: the cookie's secret and the session it names.
pub struct SessionLogin {
    /// The account that logged in.
    pub user: User,
    /// The session id for the cookie; only its hash is stored, so this is the one copy.
    pub secret: SessionId,
    /// The new session, with the CSRF token the client must echo.
    pub session: Session,
    /// The device token to hand the client (the one it presented, when valid; else a new one).
    pub device_token: String,
}

/// A login of the token or hybrid model: the token pair.
pub struct TokenLogin {
    /// The account that logged in.
    pub user: User,
    /// The access token and the first refresh token of the new family.
    pub pair: TokenPair,
    /// The device token to hand the client (the one it presented, when valid; else a new one).
    pub device_token: String,
}

/// What a login with the right password comes to.
pub enum LoginStep<T> {
    /// The login is made.
    Done(T),
    /// The account has a second factor: nothing is issued until a code completes the login
    /// ([`Logins::complete_second_factor`]).
    SecondFactor(PendingLogin),
}

/// A login waiting for its second factor: the challenge to hand the client.
pub struct PendingLogin {
    /// The challenge's secret (only its hash is stored, so this is the one copy).
    pub challenge: ChallengeSecret,
    /// The methods the account can complete it with.
    pub methods: Vec<SecondFactorMethod>,
    /// How long the challenge waits.
    pub expires_in: std::time::Duration,
    /// For an account with a passkey: the options to assert one, bound to this challenge.
    pub passkey:
        Option<Box<crate::passkey::Ceremony<webauthn_rs::prelude::RequestChallengeResponse>>>,
}

/// A second-factor code sent to complete a login.
pub struct SecondFactorAttempt<'a> {
    /// The challenge the login answered with, in its wire form.
    pub challenge: &'a str,
    /// The code, or the passkey's answer.
    pub proof: FactorProof<'a>,
    /// The client's address, whose attempt budget a wrong code spends.
    pub ip: Option<IpAddr>,
    /// The client as it describes itself now: it must be the one that logged in.
    pub client: ClientInfo,
    /// Whether the request is same-origin: a browser login (session, hybrid) is only completed
    /// from the server's own origin, as it is only started from there.
    pub same_origin: bool,
    /// The session the browser already has, which a session login replaces.
    pub replacing_session: Option<&'a SessionId>,
    /// The refresh token of the hybrid login the browser already has, which a hybrid login
    /// replaces.
    pub replacing_refresh: Option<&'a RefreshToken>,
    /// The thumbprint of the key of the request's verified DPoP proof, if it had one: a login
    /// started with a proof completes only with a proof of the same key, and its tokens are
    /// bound to it.
    pub dpop_jkt: Option<&'a str>,
}

/// A passwordless login: a passkey's answer to a ceremony.
pub struct PasskeyLoginAttempt<'a> {
    /// The sealed ceremony that came with the options.
    pub ceremony: &'a str,
    /// The authenticator's answer.
    pub credential: &'a webauthn_rs::prelude::PublicKeyCredential,
    /// The model to log in with.
    pub model: LoginModel,
    /// The client's address, whose attempt budget every try spends.
    pub ip: Option<IpAddr>,
    /// What the new login records about the client.
    pub client: ClientInfo,
    /// Whether the request is same-origin: a browser login (session, hybrid) is made only
    /// from the server's own origin.
    pub same_origin: bool,
    /// The session the browser already has, which a session login replaces.
    pub replacing_session: Option<&'a SessionId>,
    /// The refresh token of the hybrid login the browser already has, which a hybrid login
    /// replaces.
    pub replacing_refresh: Option<&'a RefreshToken>,
    /// The thumbprint of the key of the request's verified DPoP proof (token model): the
    /// login's tokens are bound to it.
    pub dpop_jkt: Option<&'a str>,
}

/// The login a browser already has, which a new one replaces.
struct Replacing<'a> {
    session: Option<&'a SessionId>,
    refresh: Option<&'a RefreshToken>,
}

/// What a passkey ceremony of a login challenge is bound to: the challenge's hash.
fn challenge_binding(hash: &crate::secret::TokenHash) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.as_bytes())
}

/// A login completed with its second factor: what the model it started in answers with.
pub enum CompletedLogin {
    /// A session login.
    Session(SessionLogin),
    /// A token or hybrid login ([`TokenLogin::pair`]'s family says which).
    Tokens(LoginModel, TokenLogin),
}

/// The service that sees every login of a user.
#[derive(Clone)]
pub struct Logins {
    accounts: Accounts,
    sessions: Sessions,
    tokens: Arc<Tokens>,
    throttle: Arc<Throttle>,
    families: Arc<dyn RefreshStore>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    /// At most this many live logins per user; the oldest end first. 0: no cap.
    max_per_user: usize,
    second_factors: SecondFactors,
    challenges: Arc<dyn crate::store::ChallengeStore>,
    contexts: crate::login_context::LoginContexts,
}

impl Logins {
    /// Built by [`crate::Services::build`], over the other services.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        accounts: Accounts,
        sessions: Sessions,
        tokens: Arc<Tokens>,
        throttle: Throttle,
        stores: &Stores,
        clock: Arc<dyn Clock>,
        max_per_user: usize,
        master_key: crate::token::MasterKey,
        second_factors: crate::second_factor::SecondFactorConfig,
    ) -> Result<Self, String> {
        let families = stores.refresh.clone();
        let events = stores.events.clone();
        let throttle = Arc::new(throttle);
        let audit = Audit::new(events, Arc::clone(&clock));
        let contexts = tokens.contexts().clone();
        let passkeys = crate::passkey::Passkeys::new(
            second_factors.passkeys.as_ref(),
            stores.second_factors.clone(),
            stores.proofs.clone(),
            master_key.clone(),
            Arc::clone(&clock),
        )?;
        let second_factors = SecondFactors::new(
            stores.second_factors.clone(),
            master_key,
            Arc::clone(&clock),
            Arc::clone(&throttle),
            audit.clone(),
            second_factors,
            passkeys,
        );
        Ok(Self {
            accounts,
            sessions,
            tokens,
            throttle,
            families,
            audit,
            clock,
            max_per_user,
            second_factors,
            challenges: stores.challenges.clone(),
            contexts,
        })
    }

    /// Binding hints: logins used from a new network and user agent at once.
    pub fn contexts(&self) -> &crate::login_context::LoginContexts {
        &self.contexts
    }

    /// Second factors: enrolment, removal, and the code check.
    pub fn second_factors(&self) -> &SecondFactors {
        &self.second_factors
    }

    /// The login-attempt budgets (registration and password changes spend them too).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Logs in with a server session. `replacing` is the session the browser already had: it
    /// ends, so a login always gets a fresh id, never one the client brought (best effort: failing
    /// to end it does not fail the login).
    pub async fn login_session(
        &self,
        attempt: LoginAttempt<'_>,
        replacing: Option<&SessionId>,
    ) -> Result<LoginStep<SessionLogin>, Error> {
        let step = self
            .login(attempt, LoginModel::Session, async |user, client, auth| {
                self.start_session(user, client, auth, replacing).await
            })
            .await?;
        Ok(match step {
            LoginStep::Done((user, device_token, (secret, session))) => {
                LoginStep::Done(SessionLogin {
                    user,
                    secret,
                    session,
                    device_token,
                })
            }
            LoginStep::SecondFactor(pending) => LoginStep::SecondFactor(pending),
        })
    }

    /// Starts a session login (the `start` of the pipeline).
    async fn start_session(
        &self,
        user: &User,
        client: ClientInfo,
        auth: AuthContext,
        replacing: Option<&SessionId>,
    ) -> Result<((SessionId, Session), CurrentLogin, Option<User>), Error> {
        if let Some(previous) = replacing
            && let Err(e) = self.sessions.end_by_secret(previous).await
        {
            tracing::warn!(error = %e, "could not end the session the login replaces");
        }
        let (secret, session) = self.sessions.start_with(user, client, auth).await?;
        let current = CurrentLogin::Session(session.handle.clone());
        Ok(((secret, session), current, None))
    }

    /// Logs in for a token pair: `model` is [`LoginModel::Token`] (bearer) or
    /// [`LoginModel::Hybrid`] (cookies). `replacing` is the refresh token of the hybrid login the
    /// browser already had: that login ends, never two in one cookie jar.
    pub async fn login_tokens(
        &self,
        attempt: LoginAttempt<'_>,
        model: LoginModel,
        replacing: Option<&RefreshToken>,
    ) -> Result<LoginStep<TokenLogin>, Error> {
        let dpop_jkt = attempt.dpop_jkt;
        let step = self
            .login(attempt, model, async |user, client, auth| {
                self.start_tokens(user, client, auth, model, replacing, dpop_jkt)
                    .await
            })
            .await?;
        Ok(match step {
            LoginStep::Done((user, device_token, pair)) => LoginStep::Done(TokenLogin {
                user,
                pair,
                device_token,
            }),
            LoginStep::SecondFactor(pending) => LoginStep::SecondFactor(pending),
        })
    }

    /// Starts a token or hybrid login (the `start` of the pipeline).
    async fn start_tokens(
        &self,
        user: &User,
        client: ClientInfo,
        auth: AuthContext,
        model: LoginModel,
        replacing: Option<&RefreshToken>,
        dpop_jkt: Option<&str>,
    ) -> Result<(TokenPair, CurrentLogin, Option<User>), Error> {
        if let Some(previous) = replacing
            && let Ok(Some(family)) = self.tokens.live_family_of(previous).await
        {
            self.tokens
                .revoke_family(&family.id, "replaced by a new login")
                .await?;
        }
        let pair = self
            .tokens
            .issue_with(user, model, client, auth, dpop_jkt)
            .await?;
        let current = CurrentLogin::Family(pair.family_id.clone());
        // Issuing read the account after storing the login, for the roles the access token
        // carries: that read also serves the pipeline's check.
        let read_after = Some(pair.user.clone());
        Ok((pair, current, read_after))
    }

    /// Completes a login that answered with a second-factor challenge: checks the code (wrong
    /// ones spend the attempt budgets and count against the challenge, which a few of them
    /// burn), uses the challenge up, and makes the login in the model it started in, as that
    /// model's login would have. [`Error::InvalidChallenge`] for a challenge that is unknown,
    /// used, expired, burnt, from another client, or whose account changed meanwhile;
    /// [`Error::InvalidSecondFactor`] for a wrong code.
    pub async fn complete_second_factor(
        &self,
        attempt: SecondFactorAttempt<'_>,
    ) -> Result<CompletedLogin, Error> {
        let config = self.second_factors.config();
        let refused = async |reason: &str| {
            self.record(
                EventKind::SecondFactorFailed,
                None,
                json!({"during": "login", "reason": reason, "ip": attempt.ip}),
            )
            .await;
            Error::InvalidChallenge
        };
        let Some(secret) = ChallengeSecret::parse(attempt.challenge.trim()) else {
            return Err(refused("malformed challenge").await);
        };
        let hash = secret.hash();
        let store = &self.challenges;
        let Some(challenge) = store
            .attempt_challenge(&hash, self.clock.now(), config.challenge_max_attempts)
            .await?
        else {
            return Err(refused("unknown, used or expired challenge").await);
        };
        if challenge.model != LoginModel::Token && !attempt.same_origin {
            return Err(Error::CrossSite);
        }
        if challenge.client.user_agent != attempt.client.user_agent {
            return Err(refused("another client").await);
        }
        // A login started with a DPoP proof completes only with a proof of the same key: the
        // challenge alone, copied, makes no login bound to someone else's key. Refused before
        // the code is looked at, so the owner can still complete it.
        if let Some(bound) = &challenge.dpop_jkt
            && attempt.dpop_jkt != Some(bound.as_str())
        {
            return Err(Error::DpopKeyRequired);
        }
        let dpop_jkt = challenge.dpop_jkt.as_deref().or(attempt.dpop_jkt);
        // Before the account is read, as for a password login (see `login`).
        let began = self.clock.now();
        let Some(user) = self
            .accounts
            .user(&challenge.user_id)
            .await?
            .filter(|u| u.is_active() && u.not_before == challenge.user_not_before)
        else {
            store.consume_challenge(&hash).await?;
            return Err(refused("the account changed").await);
        };
        let binding = challenge_binding(&hash);
        let method = self
            .second_factors
            .verify(&user, attempt.proof, attempt.ip, Occasion::Login(&binding))
            .await?;
        if !store.consume_challenge(&hash).await? {
            // Met by a concurrent request with another code a moment ago: that one logged in.
            return Err(Error::InvalidChallenge);
        }
        let now = self.clock.now();
        let auth = AuthContext::password(challenge.created_at).with_second_factor(method, now);
        self.make_login(
            user,
            began,
            challenge.client.clone(),
            auth,
            challenge.model,
            Replacing {
                session: attempt.replacing_session,
                refresh: attempt.replacing_refresh,
            },
            dpop_jkt,
        )
        .await
    }

    /// Logs in with a passkey alone (passwordless): checks the authenticator's answer to a
    /// ceremony from [`Passkeys::passwordless_options`](crate::passkey::Passkeys::passwordless_options)
    /// and makes the login in `model`, as a password login would have. Every attempt spends the
    /// address's budget; one that does not verify (an unknown passkey, a wrong signature, a used
    /// ceremony) answers [`Error::InvalidCredentials`], as a wrong password does.
    pub async fn login_passkey(
        &self,
        attempt: PasskeyLoginAttempt<'_>,
    ) -> Result<CompletedLogin, Error> {
        let model = attempt.model;
        if model != LoginModel::Token && !attempt.same_origin {
            return Err(Error::CrossSite);
        }
        self.throttle.spend_address(attempt.ip).await?;
        // Before the account is read (see `login`).
        let began = self.clock.now();
        let verified = self
            .second_factors
            .passkeys()
            .verify_passwordless(attempt.ceremony, attempt.credential)
            .await?;
        let user = match verified {
            Some(id) => self.accounts.user(&id).await?.filter(User::is_active),
            None => None,
        };
        metrics::counter!(
            "tessera_logins_total",
            "model" => model.as_str(),
            "outcome" => if user.is_some() { "success" } else { "failure" },
        )
        .increment(1);
        let Some(user) = user else {
            metrics::counter!("tessera_passkey_failures_total").increment(1);
            self.record(
                EventKind::LoginFailed,
                None,
                json!({"model": model, "method": "passkey", "ip": attempt.ip}),
            )
            .await;
            return Err(Error::InvalidCredentials);
        };
        if self.accounts.refuses_unverified(&user) {
            self.record(
                EventKind::LoginFailed,
                Some(&user.id),
                json!({"model": model, "method": "passkey", "reason": "email_not_verified", "ip": attempt.ip}),
            )
            .await;
            return Err(Error::EmailNotVerified);
        }
        self.record(
            EventKind::LoginSucceeded,
            Some(&user.id),
            json!({"model": model, "method": "passkey", "ip": attempt.ip}),
        )
        .await;
        let auth = AuthContext::passkey(self.clock.now());
        self.make_login(
            user,
            began,
            attempt.client,
            auth,
            model,
            Replacing {
                session: attempt.replacing_session,
                refresh: attempt.replacing_refresh,
            },
            attempt.dpop_jkt,
        )
        .await
    }

    /// New passkey options for a login that waits for its second factor: a passkey's answer
    /// that was refused used up the options the login came with, and the password need not be
    /// typed again. Asking counts as one of the challenge's attempts (so it cannot be asked for
    /// without end), from the client the challenge was given to only.
    /// [`Error::InvalidChallenge`] for a challenge that is unknown, used, expired or burnt, or
    /// from another client; [`Error::Conflict`] when the account has no passkey.
    pub async fn second_factor_passkey_options(
        &self,
        challenge: &str,
        client: &ClientInfo,
    ) -> Result<crate::passkey::Ceremony<webauthn_rs::prelude::RequestChallengeResponse>, Error>
    {
        let config = self.second_factors.config();
        let Some(secret) = ChallengeSecret::parse(challenge.trim()) else {
            return Err(Error::InvalidChallenge);
        };
        let hash = secret.hash();
        let Some(challenge) = self
            .challenges
            .attempt_challenge(&hash, self.clock.now(), config.challenge_max_attempts)
            .await?
        else {
            return Err(Error::InvalidChallenge);
        };
        if challenge.client.user_agent != client.user_agent {
            return Err(Error::InvalidChallenge);
        }
        self.second_factors
            .passkeys()
            .assertion_options(
                &challenge.user_id,
                crate::passkey::CeremonyPurpose::SecondFactor,
                &challenge_binding(&hash),
            )
            .await
    }

    /// Options to step up with a passkey (see [`Logins::step_up`]).
    pub async fn step_up_options(
        &self,
        user: &UserId,
    ) -> Result<crate::passkey::Ceremony<webauthn_rs::prelude::RequestChallengeResponse>, Error>
    {
        self.second_factors
            .passkeys()
            .assertion_options(user, crate::passkey::CeremonyPurpose::StepUp, "")
            .await
    }

    /// Makes a login whose every factor was checked, in `model`: a session, or a token pair
    /// (bound to `dpop_jkt` for the token model).
    #[allow(clippy::too_many_arguments)]
    async fn make_login(
        &self,
        user: User,
        began: Timestamp,
        client: ClientInfo,
        auth: AuthContext,
        model: LoginModel,
        replacing: Replacing<'_>,
        dpop_jkt: Option<&str>,
    ) -> Result<CompletedLogin, Error> {
        let account = crate::throttle::normalize_account(user.username.as_str());
        let device_token = self.tokens.keyring().device_token(&account)?;
        Ok(match model {
            LoginModel::Session => {
                let (secret, session) = self
                    .finish(&user, began, client, auth, async |user, client, auth| {
                        self.start_session(user, client, auth, replacing.session)
                            .await
                    })
                    .await?;
                CompletedLogin::Session(SessionLogin {
                    user,
                    secret,
                    session,
                    device_token,
                })
            }
            model => {
                let pair = self
                    .finish(&user, began, client, auth, async |user, client, auth| {
                        self.start_tokens(
                            user,
                            client,
                            auth,
                            model,
                            replacing.refresh,
                            dpop_jkt.filter(|_| model == LoginModel::Token),
                        )
                        .await
                    })
                    .await?;
                CompletedLogin::Tokens(
                    model,
                    TokenLogin {
                        user,
                        pair,
                        device_token,
                    },
                )
            }
        })
    }

    /// Stores a challenge for `user`, whose password was right.
    async fn challenge(
        &self,
        user: &User,
        model: LoginModel,
        client: ClientInfo,
        dpop_jkt: Option<&str>,
    ) -> Result<PendingLogin, Error> {
        let config = self.second_factors.config();
        let methods = self.second_factors.status(&user.id).await?.methods();
        let secret = ChallengeSecret::generate()?;
        let passkey = if methods.contains(&SecondFactorMethod::Webauthn)
            && self.second_factors.passkeys().enabled()
        {
            Some(Box::new(
                self.second_factors
                    .passkeys()
                    .assertion_options(
                        &user.id,
                        crate::passkey::CeremonyPurpose::SecondFactor,
                        &challenge_binding(&secret.hash()),
                    )
                    .await?,
            ))
        } else {
            None
        };
        let now = self.clock.now();
        self.challenges
            .create_challenge(&LoginChallenge {
                hash: secret.hash(),
                user_id: user.id.clone(),
                model,
                user_not_before: user.not_before,
                client,
                created_at: now,
                expires_at: now.saturating_add(config.challenge_lifetime),
                attempts: 0,
                dpop_jkt: dpop_jkt.map(str::to_owned),
            })
            .await?;
        Ok(PendingLogin {
            challenge: secret,
            methods,
            expires_in: config.challenge_lifetime,
            passkey,
        })
    }

    /// Step-up: the caller, logged in as `user` with `login`, uses a second factor again. The
    /// login's authentication context records it (a session on every node; a family for its
    /// later tokens); for a token login a fresh access token carrying it comes back.
    pub async fn step_up(
        &self,
        user: &User,
        login: &CurrentLogin,
        current: AuthContext,
        proof: FactorProof<'_>,
        ip: Option<IpAddr>,
    ) -> Result<(AuthContext, Option<crate::token::SteppedUpAccess>), Error> {
        let method = self
            .second_factors
            .verify(user, proof, ip, Occasion::StepUp)
            .await?;
        let auth = current.with_second_factor(method, self.clock.now());
        let access = match login {
            CurrentLogin::Session(handle) => {
                if !self.sessions.set_auth(handle, &auth).await? {
                    return Err(Error::Unauthenticated);
                }
                None
            }
            CurrentLogin::Family(family) => Some(
                self.tokens
                    .step_up(family, &user.id, auth)
                    .await
                    .map_err(|e| match e {
                        Error::InvalidGrant => Error::Unauthenticated,
                        e => e,
                    })?,
            ),
            CurrentLogin::None => return Err(Error::Unauthenticated),
        };
        self.record(
            EventKind::SteppedUp,
            Some(&user.id),
            json!({"login": match login {
                CurrentLogin::Session(h) => h.to_string(),
                CurrentLogin::Family(f) => f.to_string(),
                CurrentLogin::None => String::new(),
            }, "method": method}),
        )
        .await;
        Ok((auth, access))
    }

    /// The pipeline every login goes through: spend an attempt of the address and the account,
    /// check the credentials (audited); then, for an account with a second factor, store a
    /// challenge and stop there; otherwise [`finish`](Self::finish) the login.
    async fn login<T>(
        &self,
        attempt: LoginAttempt<'_>,
        model: LoginModel,
        start: impl AsyncFnOnce(
            &User,
            ClientInfo,
            AuthContext,
        ) -> Result<(T, CurrentLogin, Option<User>), Error>,
    ) -> Result<LoginStep<(User, String, T)>, Error> {
        let LoginAttempt {
            username,
            password,
            ip,
            client,
            device,
            dpop_jkt,
        } = attempt;
        self.throttle.spend_address(ip).await?;
        let account = crate::throttle::normalize_account(username);
        let keyring = self.tokens.keyring();
        let device_id = device.and_then(|token| keyring.verify_device_token(&account, token));
        // Spent before the password is checked, so guesses sent all at once cannot all pass;
        // given back unless the password was wrong, so only failures count and its owner
        // logging in often is never throttled.
        self.throttle
            .spend_account(username, device_id.as_deref())
            .await?;
        // Before the account is read: a change that completes after this instant may have been
        // made while the old password was being checked.
        let began = self.clock.now();
        let checked = self.authenticate(username, password, model, &client).await;
        if !matches!(checked, Err(Error::InvalidCredentials)) {
            self.throttle
                .refund_account(username, device_id.as_deref())
                .await?;
        }
        let user = checked?;
        // Only now, with the password right: a wrong password or an unknown user answers as
        // before, in the same time, whether or not the account has a second factor.
        if self.second_factors.required(&user.id).await? {
            return Ok(LoginStep::SecondFactor(
                self.challenge(&user, model, client, dpop_jkt).await?,
            ));
        }
        let auth = AuthContext::password(self.clock.now());
        let started = self.finish(&user, began, client, auth, start).await?;
        let device_token = match (device, device_id) {
            (Some(token), Some(_)) => token.to_owned(),
            _ => keyring.device_token(&account)?,
        };
        Ok(LoginStep::Done((user, device_token, started)))
    }

    /// The end of every login, with or without a second factor: `start` the login in its
    /// model, void it if the account changed since `began` (when `user` was read), then keep
    /// the user within the cap (the new login is spared). `start` returns what it started,
    /// which login that is, and the account if it read it again after storing the login (else
    /// this reads it).
    async fn finish<T>(
        &self,
        user: &User,
        began: Timestamp,
        client: ClientInfo,
        auth: AuthContext,
        start: impl AsyncFnOnce(
            &User,
            ClientInfo,
            AuthContext,
        ) -> Result<(T, CurrentLogin, Option<User>), Error>,
    ) -> Result<T, Error> {
        // A login presents no refresh token: `InvalidGrant` from starting one means the account
        // was disabled or deleted meanwhile, which is what the credentials answer says.
        let (started, current, read_after) =
            start(user, client, auth).await.map_err(|e| match e {
                Error::InvalidGrant => Error::InvalidCredentials,
                e => e,
            })?;
        // A password change, role change, disable or forced logout that completed while this
        // login was being made voids it. Every such change moves the account's `not_before`
        // before it ends the logins it finds, so either it found this one, or this read sees it.
        // The clock's millisecond cannot order a change made in the very millisecond the login
        // began, so `not_before` having moved at all since the account was read voids it too:
        // every change moves it, even two in one millisecond (`User::moved_not_before`).
        // `start` may hand back the account as it read it after storing the login; else read it.
        let fresh = match read_after {
            Some(fresh) => Some(fresh),
            None => self.accounts.user(&user.id).await?,
        };
        if fresh.is_none_or(|fresh| {
            !fresh.is_active() || fresh.not_before > began || fresh.not_before != user.not_before
        }) {
            self.end_started(&current).await?;
            tracing::info!(user = %user.id, "a login raced a change to the account; ended");
            return Err(Error::InvalidCredentials);
        }
        self.enforce_cap(&user.id, &current).await?;
        Ok(started)
    }

    /// Ends a login the pipeline started and must not hand out.
    async fn end_started(&self, login: &CurrentLogin) -> Result<(), Error> {
        match login {
            CurrentLogin::Session(handle) => {
                self.sessions.end(handle).await?;
            }
            CurrentLogin::Family(family) => {
                self.tokens
                    .revoke_family(family, "a credential change completed during the login")
                    .await?;
            }
            CurrentLogin::None => {}
        }
        Ok(())
    }

    /// Logs out of a session: it is deleted on every node, and the logout is audited.
    pub async fn logout_session(
        &self,
        user: &UserId,
        session: &SessionHandle,
    ) -> Result<(), Error> {
        self.sessions.end(session).await?;
        self.record(
            EventKind::Logout,
            Some(user),
            json!({"login": session, "model": LoginModel::Session}),
        )
        .await;
        Ok(())
    }

    /// Logs out of a hybrid login: its family is revoked (refresh and access tokens), and the
    /// logout is audited.
    pub async fn logout_hybrid(&self, family: &FamilyId) -> Result<(), Error> {
        self.tokens.revoke_family(family, "logout").await?;
        self.record(
            EventKind::Logout,
            None,
            json!({"login": family, "model": LoginModel::Hybrid}),
        )
        .await;
        Ok(())
    }

    /// Checks credentials and records the attempt in the audit log (the attempted username for a
    /// failure; never the password).
    async fn authenticate(
        &self,
        username: &str,
        password: &Password,
        model: LoginModel,
        client: &ClientInfo,
    ) -> Result<User, Error> {
        let outcome = self.accounts.authenticate(username, password).await;
        metrics::counter!(
            "tessera_logins_total",
            "model" => model.as_str(),
            "outcome" => if outcome.is_ok() { "success" } else { "failure" },
        )
        .increment(1);
        match outcome {
            Ok(user) => {
                self.record(
                    EventKind::LoginSucceeded,
                    Some(&user.id),
                    json!({"model": model, "ip": client.ip}),
                )
                .await;
                Ok(user)
            }
            Err(Error::InvalidCredentials) => {
                let attempted: String = username.chars().take(64).collect();
                self.record(
                    EventKind::LoginFailed,
                    None,
                    json!({"model": model, "username": attempted, "ip": client.ip}),
                )
                .await;
                Err(Error::InvalidCredentials)
            }
            Err(Error::EmailNotVerified) => {
                metrics::counter!("tessera_logins_unverified_total").increment(1);
                self.record(
                    EventKind::LoginFailed,
                    None,
                    json!({"model": model, "reason": "email_not_verified", "ip": client.ip}),
                )
                .await;
                Err(Error::EmailNotVerified)
            }
            Err(e) => Err(e),
        }
    }

    /// Every live login of a user, oldest first.
    pub async fn list(
        &self,
        user: &UserId,
        current: &CurrentLogin,
    ) -> Result<Vec<LoginInfo>, Error> {
        let now = self.clock.now();
        let mut logins: Vec<LoginInfo> = self
            .sessions
            .of_user(user)
            .await?
            .into_iter()
            .map(|s| LoginInfo {
                current: current.is(s.handle.as_str()),
                id: s.handle.to_string(),
                model: LoginModel::Session,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                expires_at: s.expires_at,
                user_agent: s.client.user_agent.map(|ua| ua.as_str().to_owned()),
                ip: s.client.ip.map(|ip| ip.to_string()),
            })
            .collect();
        for f in self.families.families_of_user(user).await? {
            if !f.is_live(now) {
                continue;
            }
            logins.push(LoginInfo {
                current: current.is(f.id.as_str()),
                id: f.id.to_string(),
                model: f.model,
                created_at: f.created_at,
                last_seen_at: f.last_used_at,
                expires_at: f.expires_at.min(f.absolute_expires_at),
                user_agent: f.client.user_agent.map(|ua| ua.as_str().to_owned()),
                ip: f.client.ip.map(|ip| ip.to_string()),
            });
        }
        logins.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(logins)
    }

    /// Ends one login of `user` by id. `false` when the user has no live login with that id (so a
    /// user cannot end someone else's).
    pub async fn end(&self, user: &UserId, id: &str, reason: &str) -> Result<bool, Error> {
        let Some(login) = self
            .list(user, &CurrentLogin::None)
            .await?
            .into_iter()
            .find(|l| l.id == id)
        else {
            return Ok(false);
        };
        self.end_login(user, &login, reason).await?;
        Ok(true)
    }

    async fn end_login(&self, user: &UserId, login: &LoginInfo, reason: &str) -> Result<(), Error> {
        match login.model {
            LoginModel::Session => {
                // The id was listed from the session's handle, so it parses.
                let handle = SessionHandle::parse(&login.id).ok_or_else(|| {
                    Error::Internal(format!(
                        "a listed session handle is malformed: {}",
                        login.id
                    ))
                })?;
                self.sessions.end(&handle).await?;
            }
            LoginModel::Token | LoginModel::Hybrid => {
                self.tokens
                    .revoke_family(&FamilyId::from_stored(login.id.clone()), reason)
                    .await?;
            }
        }
        self.record(
            EventKind::Logout,
            Some(user),
            json!({"login": login.id, "reason": reason}),
        )
        .await;
        Ok(())
    }

    /// Ends every login of `user` but the current one; returns how many ended.
    pub async fn end_others(
        &self,
        user: &UserId,
        current: &CurrentLogin,
        reason: &str,
    ) -> Result<usize, Error> {
        let mut ended = 0;
        for login in self.list(user, current).await? {
            if !login.current {
                self.end_login(user, &login, reason).await?;
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Keeps a user within the cap after the login `new`: the oldest other logins end first.
    pub async fn enforce_cap(&self, user: &UserId, new: &CurrentLogin) -> Result<(), Error> {
        if self.max_per_user == 0 {
            return Ok(());
        }
        let logins = self.list(user, new).await?;
        if logins.len() <= self.max_per_user {
            return Ok(());
        }
        let excess = logins.len() - self.max_per_user;
        for login in logins.iter().filter(|l| !l.current).take(excess) {
            self.end_login(user, login, "session cap reached").await?;
        }
        Ok(())
    }

    /// Every credential of a user stops working at once: sessions deleted, families revoked,
    /// and every access token issued until now refused.
    pub async fn force_logout(&self, user: &UserId, by: Option<&UserId>) -> Result<usize, Error> {
        // First, so that a login being made right now cannot slip past the listing below.
        self.accounts.set_not_before(user, self.clock.now()).await?;
        let ended = self
            .end_others(user, &CurrentLogin::None, "forced logout")
            .await?;
        self.tokens
            .revoke_user_before(user, self.clock.now())
            .await?;
        self.sessions.user_changed(user).await;
        self.record(
            EventKind::ForcedLogout,
            Some(user),
            json!({"by": by, "logins": ended}),
        )
        .await;
        Ok(ended)
    }

    /// Changes a password after checking the current one. Every other login ends, and access
    /// tokens issued before stop working — the caller's own included (a token caller refreshes; a
    /// session caller gets a new session id from the HTTP layer).
    pub async fn change_password(
        &self,
        user: &User,
        current_password: &Password,
        new_password: &Password,
        current: &CurrentLogin,
        current_jti: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<(), Error> {
        // Checking the current password is a guess like a login: the same budgets.
        self.throttle.spend_address(ip).await?;
        // Spent up front and given back unless the current password was wrong, as for a login.
        let name = user.username.as_str();
        self.throttle.spend_account(name, None).await?;
        let changed = async {
            // The current password is checked against the stored account, never a cached copy.
            let user = self
                .accounts
                .user(&user.id)
                .await?
                .filter(User::is_active)
                .ok_or(Error::Unauthenticated)?;
            self.accounts
                .change_password(&user, current_password, new_password)
                .await?;
            Ok::<User, Error>(user)
        }
        .await;
        if !matches!(changed, Err(Error::WrongCurrentPassword)) {
            self.throttle.refund_account(name, None).await?;
        }
        let user = &changed?;
        self.sessions.user_changed(&user.id).await;
        self.end_others(&user.id, current, "password changed")
            .await?;
        self.tokens
            .revoke_user_before(&user.id, self.clock.now())
            .await?;
        if let Some(jti) = current_jti {
            self.tokens
                .revoke_access_token(jti, self.clock.now())
                .await?;
        }
        self.record(EventKind::PasswordChanged, Some(&user.id), json!({}))
            .await;
        Ok(())
    }

    /// Sets a user's password without the current one (an operator or admin resetting it): every
    /// login of the user ends and every access token issued until now is refused, as after a
    /// password change. `false` when there is no such user.
    pub async fn set_password(
        &self,
        user: &UserId,
        new_password: &Password,
        by: Option<&UserId>,
    ) -> Result<bool, Error> {
        if !self.accounts.set_password(user, new_password).await? {
            return Ok(false);
        }
        let ended = self
            .end_everything(user, "password set by an administrator")
            .await?;
        self.record(
            EventKind::PasswordChanged,
            Some(user),
            json!({"by": by, "logins": ended}),
        )
        .await;
        Ok(true)
    }

    /// Every login of `user` ends (on every node) and every access token issued until now is
    /// refused: what a password set without the old one needs (an admin, a recovery code).
    /// The account's `not_before` must already have moved with the change. Returns how many
    /// logins ended.
    pub async fn end_everything(&self, user: &UserId, reason: &str) -> Result<usize, Error> {
        self.sessions.user_changed(user).await;
        let ended = self.end_others(user, &CurrentLogin::None, reason).await?;
        self.tokens
            .revoke_user_before(user, self.clock.now())
            .await?;
        Ok(ended)
    }

    /// The account changed in a way the near caches must learn on every node (its address or
    /// whether it is verified).
    pub async fn account_changed(&self, user: &UserId) {
        self.sessions.account_changed(user).await;
    }

    /// Ends one login by its id alone (`ses_…` or `fam_…`), whoever it belongs to: an operator
    /// ending a login they found in a log. Returns whose it was; `None` when no live login has
    /// that id.
    pub async fn end_by_id(&self, id: &str, reason: &str) -> Result<Option<UserId>, Error> {
        let owner = if let Some(handle) = SessionHandle::parse(id) {
            self.sessions.owner(&handle).await?
        } else if id.starts_with("fam_") {
            self.families
                .family(&FamilyId::from_stored(id.to_owned()))
                .await?
                .map(|f| f.user_id)
        } else {
            None
        };
        let Some(owner) = owner else {
            return Ok(None);
        };
        Ok(self.end(&owner, id, reason).await?.then_some(owner))
    }

    /// Disables or enables an account. A disabled user cannot log in and loses every credential.
    pub async fn set_disabled(
        &self,
        user: &UserId,
        disabled: bool,
        by: Option<&UserId>,
    ) -> Result<bool, Error> {
        if !self.accounts.set_disabled(user, disabled).await? {
            return Ok(false);
        }
        self.sessions.user_disabled(user, disabled).await;
        if disabled {
            self.force_logout(user, by).await?;
        }
        self.record(
            if disabled {
                EventKind::UserDisabled
            } else {
                EventKind::UserEnabled
            },
            Some(user),
            json!({"by": by}),
        )
        .await;
        Ok(true)
    }

    /// Replaces a user's roles. Access tokens carry roles, so the user's current access tokens
    /// stop working (a privilege change); their logins live on and the next refresh carries the
    /// new roles. `false` when there is no such user.
    pub async fn set_roles(
        &self,
        user: &UserId,
        roles: &[String],
        by: Option<&UserId>,
    ) -> Result<bool, Error> {
        if !self.accounts.set_roles(user, roles).await? {
            return Ok(false);
        }
        self.sessions.user_changed(user).await;
        self.tokens
            .revoke_user_before(user, self.clock.now())
            .await?;
        self.record(
            EventKind::RolesChanged,
            Some(user),
            json!({"by": by, "roles": roles}),
        )
        .await;
        Ok(true)
    }

    /// Deletes an account after checking its password: the owner's own request. Checking the
    /// password is a guess like a login, throttled with the same budgets (spent up front, given
    /// back unless the password was wrong). See [`Logins::delete_account`] for what goes.
    pub async fn delete_own_account(
        &self,
        user: &User,
        password: &Password,
        ip: Option<IpAddr>,
    ) -> Result<(), Error> {
        self.throttle.spend_address(ip).await?;
        let name = user.username.as_str();
        self.throttle.spend_account(name, None).await?;
        let checked = async {
            // Checked against the stored account, never a cached copy.
            let stored = self
                .accounts
                .user(&user.id)
                .await?
                .filter(User::is_active)
                .ok_or(Error::Unauthenticated)?;
            self.accounts.check_password(&stored, password).await
        }
        .await;
        if !matches!(checked, Err(Error::WrongCurrentPassword)) {
            self.throttle.refund_account(name, None).await?;
        }
        checked?;
        if !self.delete_account(&user.id, Some(&user.id)).await? {
            // Deleted by someone else meanwhile: the caller's credential is void all the same.
            return Err(Error::Unauthenticated);
        }
        Ok(())
    }

    /// Deletes an account and everything of it, in every store: the user row (credentials,
    /// roles), its sessions with their data and index, its refresh families, its live access
    /// tokens. Every login of it ends on every node: sessions and the cached account are dropped
    /// from the near caches, and access tokens issued until now are refused here and by resource
    /// servers following the revocation stream. The audit log keeps the user id but not the
    /// username (taken out of the user's events and of failed logins that attempted it) and
    /// gains an `account_deleted` event naming `by`. `false` when there is no such user.
    ///
    /// The account is disabled first, so nothing can log in while the rest happens; the user
    /// row and what the same database holds go in one transaction, last. When a step fails the
    /// account stays disabled and calling this again finishes the job.
    pub async fn delete_account(&self, user: &UserId, by: Option<&UserId>) -> Result<bool, Error> {
        let Some(account) = self.accounts.user(user).await? else {
            return Ok(false);
        };
        // Disabling moves `not_before`: a login being made right now voids itself (see `login`),
        // and a refresh is refused from here on.
        self.accounts.set_disabled(user, true).await?;
        self.sessions.user_changed(user).await;
        // Access tokens carry no account state a resource server could check: a "not before"
        // revocation stops them everywhere at once. It is keyed by the user id, which is never
        // handed out again, so a later account of the same name is not affected.
        self.tokens
            .revoke_user_before(user, self.clock.now())
            .await?;
        // Sessions may live in another store (Redis) than the account.
        let sessions = self.sessions.end_all_of_user(user).await?;
        let now = self.clock.now();
        let families = self
            .families
            .families_of_user(user)
            .await?
            .iter()
            .filter(|f| f.is_live(now))
            .count();
        let deletion = UserDeletion {
            user: user.clone(),
            username: account.username.clone(),
            event: NewEvent {
                at: now,
                kind: EventKind::AccountDeleted,
                user_id: Some(user.clone()),
                detail: json!({"by": by, "logins": sessions + families}),
            },
        };
        let deleted = self.accounts.erase(&deletion).await?;
        // Again, now that the account is gone: every node forgets the disabled copy and the
        // sessions it may have read in between.
        self.sessions.user_changed(user).await;
        if deleted {
            tracing::info!(user = %user, "account deleted");
        }
        Ok(deleted)
    }

    /// The audit log, newest first: up to `limit` events with an id below `before`.
    pub async fn events(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, Error> {
        self.audit.events(before, limit).await
    }

    /// Records a security event in the audit log (see [`Audit::record`]: never fails).
    pub(crate) async fn record(
        &self,
        kind: EventKind,
        user: Option<&UserId>,
        detail: serde_json::Value,
    ) {
        self.audit.record(kind, user, detail).await;
    }
}
