//! Extractors: a handler's signature says what it requires, and an extractor that authenticates
//! with a cookie carries that route's CSRF rule, so a handler cannot forget it. They serve
//! Tessera's own routes and an application's alike: each works with any router state from which
//! [`AppState`] can be had (`AppState: FromRef<S>`), and each rejection is Tessera's problem
//! document ([`ApiError`]).
//!
//! - [`AuthUser`]: the caller's identity, whichever model authenticated it (`Option<AuthUser>`:
//!   the caller or an anonymous one); [`CookieAuth`]: a caller logged in with a cookie (session or
//!   hybrid), with the CSRF rules on unsafe methods; [`CsrfForm`]: an HTML form from such a caller,
//!   its CSRF token in a form field.
//! - [`RequireRole`] (any [`Role`]), [`AdminUser`]: a caller whose account has the role.
//! - [`SessionAuth`] (session cookie), [`BearerAuth`] (`Authorization: Bearer`), [`HybridAuth`]
//!   (the hybrid access cookie): one model each. [`SessionData`]: the session's data, read and
//!   changed without losing a concurrent change.
//! - [`HybridLogin`], [`HybridRefresh`], [`HybridLogout`]: the hybrid routes that work from the
//!   refresh cookie.
//! - [`SessionCookie`], [`HybridRefreshCookie`]: the login a browser already has, which a new login
//!   replaces.
//! - [`ServiceClient`]: a resource server with HTTP Basic credentials (introspection, the
//!   revocation stream).
//! - [`ClientMeta`]: the client's address and user agent, recorded with a login.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tessera_http::AppState;
//! use tessera_http::extract::AuthUser;
//!
//! async fn whoami(user: AuthUser) -> String {
//!     format!("{} (logged in with the {} model)", user.user.username, user.model_name())
//! }
//!
//! async fn greeting(user: Option<AuthUser>) -> String {
//!     user.map_or_else(|| "hello, stranger".into(), |u| format!("hello, {}", u.user.username))
//! }
//!
//! let routes: Router<AppState> = Router::new()
//!     .route("/whoami", get(whoami))
//!     .route("/", get(greeting));
//! ```

mod bearer;
mod cookies;
mod data;
pub(crate) mod dpop;
mod form;
mod hybrid;
mod role;
mod service_client;
mod session;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use tessera_core::token::VerifiedClaims;
use tessera_core::{ClientInfo, LoginModel, Session, User, UserAgent, UserId};

pub use bearer::BearerAuth;
pub(crate) use bearer::bearer_token;
pub use cookies::{
    CookieNames, DEVICE_COOKIE, HYBRID_ACCESS_COOKIE, HYBRID_REFRESH_COOKIE, SESSION_COOKIE,
};
pub(crate) use cookies::{cookie_value, session_secret};
pub use data::SessionData;
pub use dpop::{OptionalDpopProof, TokenEndpointProof};
pub use form::{CSRF_FIELD, CsrfForm};
pub use hybrid::{HybridAuth, HybridLogin, HybridLogout, HybridRefresh, HybridRefreshCookie};
pub use role::{Admin, RequireRole, Role};
pub use service_client::ServiceClient;
pub use session::{DeviceCookie, SessionAuth, SessionCookie};

use crate::client_ip::ClientIp;
use crate::problem::ApiError;
use crate::state::AppState;

/// How the caller was authenticated.
pub enum AuthModel {
    /// The session cookie, with the session it names (already checked live, and its activity
    /// recorded).
    Session(Arc<Session>),
    /// A bearer (token model) or cookie-held (hybrid model) access token.
    Token(Box<VerifiedClaims>),
}

/// The caller's identity, from any login model. A request with an `Authorization` header is judged
/// by it alone; otherwise by the session cookie.
///
/// ```
/// # use std::sync::Arc;
/// # use axum::body::Body;
/// # use axum::http::Request;
/// # use tessera_core::{ClientInfo, LoginModel, Password, Services, ServicesConfig, Stores, SystemClock};
/// # async fn call(app: &axum::Router, request: Request<Body>) -> (u16, String) {
/// #     use tower::ServiceExt;
/// #     let response = app.clone().oneshot(request).await.unwrap();
/// #     let status = response.status().as_u16();
/// #     let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
/// #     (status, String::from_utf8_lossy(&body).into_owned())
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let (key, _) = tessera_core::token::MasterKey::generate().unwrap();
/// # let services = Services::build(Stores::from_one(tessera_store::MemoryStore::new()),
/// #     Arc::new(SystemClock), key, ServicesConfig::default()).await.unwrap();
/// # let _follower = services.spawn_follower();
/// # let state = tessera_http::AppState::new(services, Default::default()).unwrap();
/// # let alice = state.accounts().create("alice", &Password::new("correct horse battery"), vec![]).await.unwrap();
/// use axum::{Router, routing::get};
/// use tessera_http::extract::AuthUser;
///
/// async fn whoami(user: AuthUser) -> String {
///     format!("{} ({})", user.user.username, user.model_name())
/// }
/// let app = Router::new().route("/whoami", get(whoami)).with_state(state.clone());
///
/// // Anonymous: Tessera's 401 problem document.
/// let (status, body) = call(&app, Request::get("/whoami").body(Body::empty()).unwrap()).await;
/// assert_eq!(status, 401);
/// assert!(body.contains("urn:tessera:problem:unauthenticated"), "{body}");
///
/// // A bearer token (token model), then a session cookie (session model): the same handler.
/// let pair = state.tokens().issue(&alice, LoginModel::Token, ClientInfo::default()).await.unwrap();
/// let bearer = Request::get("/whoami")
///     .header("authorization", format!("Bearer {}", pair.access_token))
///     .body(Body::empty())
///     .unwrap();
/// assert_eq!(call(&app, bearer).await, (200, "alice (token)".to_owned()));
/// let (secret, _) = state.sessions().start(&alice, ClientInfo::default()).await.unwrap();
/// let cookie = Request::get("/whoami")
///     .header("cookie", format!("{}={}", state.cookies().session, secret.encode()))
///     .body(Body::empty())
///     .unwrap();
/// assert_eq!(call(&app, cookie).await, (200, "alice (session)".to_owned()));
/// # }
/// ```
pub struct AuthUser {
    /// The account, from this node's accounts cache (read from the store once, then kept current
    /// by the change feed).
    pub user: Arc<User>,
    /// Which login model authenticated the request, and its session or token claims.
    pub model: AuthModel,
}

impl AuthUser {
    /// Whether the account has the `admin` role, which the `/v1/admin` routes require.
    pub fn is_admin(&self) -> bool {
        self.user.roles.iter().any(|r| r == "admin")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Self::extract(parts, &AppState::from_ref(state)).await
    }
}

/// `Option<AuthUser>`: the caller when a credential of any model authenticates the request, and
/// `None` for an anonymous caller or one whose credential does not (expired, revoked, or a
/// cookie-authenticated unsafe request without its CSRF token: such a caller is treated as
/// anonymous, never as the cookie's owner). Only a server that cannot tell (its store is
/// unreachable, 503) is a rejection: it fails closed rather than serve an anonymous page to a
/// logged-in user by mistake.
impl<S: Send + Sync> OptionalFromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, ApiError> {
        match Self::extract(parts, &AppState::from_ref(state)).await {
            Ok(user) => Ok(Some(user)),
            Err(e) if e.status.is_server_error() => Err(e),
            Err(_) => Ok(None),
        }
    }
}

impl AuthUser {
    pub(crate) async fn extract(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let BearerAuth { claims } = BearerAuth::extract(parts, state).await?;
            let user = token_user(state, &claims)
                .await?
                .ok_or_else(ApiError::invalid_token)?;
            return Ok(Self {
                user,
                model: AuthModel::Token(Box::new(claims)),
            });
        }
        if let Some(found) = CookieAuth::extract(parts, state).await? {
            return Ok(found.0);
        }
        Err(ApiError::unauthenticated())
    }

    /// The CSRF token of the caller's login, to put in a page's forms (field `csrf_token`, see
    /// [`CsrfForm`]) or in `X-CSRF-Token` from its scripts: the session's token, or the hybrid
    /// login's. `None` for a bearer token, which needs none.
    pub fn csrf_token(&self, state: &AppState) -> Option<String> {
        match &self.model {
            AuthModel::Session(session) => Some(session.csrf_token.encode()),
            AuthModel::Token(claims) if claims.claims().model == LoginModel::Hybrid => Some(
                state
                    .tokens()
                    .keyring()
                    .hybrid_csrf_token(claims.claims().fid.as_str()),
            ),
            AuthModel::Token(_) => None,
        }
    }

    /// The caller's account id.
    pub fn id(&self) -> &UserId {
        &self.user.id
    }

    /// Whether the account has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.user.roles.iter().any(|r| r == role)
    }

    /// `Ok` when the account has `role`, else Tessera's 403 problem document naming the role: for
    /// a route whose role is only known at run time (see [`RequireRole`] otherwise).
    pub fn require_role(&self, role: &str) -> Result<(), ApiError> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "missing-role",
                format!("this route needs the {role} role"),
            ))
        }
    }

    /// The login the request came with: its session, or its access token's family.
    pub fn login(&self) -> tessera_core::CurrentLogin {
        match &self.model {
            AuthModel::Session(s) => tessera_core::CurrentLogin::Session(s.handle.clone()),
            AuthModel::Token(c) => tessera_core::CurrentLogin::Family(c.family_id().clone()),
        }
    }

    /// How the caller authenticated for this login: its session's record, or what its access
    /// token says (`auth_time`, `amr`, `acr`; a token without them is read as a password login at its
    /// issue time).
    pub fn auth_context(&self) -> tessera_core::AuthContext {
        match &self.model {
            AuthModel::Session(session) => session.auth,
            AuthModel::Token(claims) => {
                let claims = claims.claims();
                let at = tessera_core::Timestamp::from_unix_millis(
                    claims
                        .auth_time
                        .map_or(claims.iat_ms, |s| s.saturating_mul(1000)),
                );
                tessera_core::AuthContext::from_token(
                    claims.amr.as_deref(),
                    claims.acr.as_deref(),
                    at,
                )
            }
        }
    }

    /// Whether the caller used a second factor within `max_age` before `now`.
    pub fn second_factor_within(
        &self,
        now: tessera_core::Timestamp,
        max_age: std::time::Duration,
    ) -> bool {
        match &self.model {
            AuthModel::Session(session) => session.auth.second_factor_within(now, max_age),
            AuthModel::Token(claims) => claims.claims().second_factor_within(now, max_age),
        }
    }

    /// `Ok` when the caller may take a privileged action: a user with a second factor must
    /// have used it within `accounts.privileged_max_age` (and, for an admin route with
    /// `accounts.admin_requires_second_factor`, every admin must); otherwise the step-up
    /// problem (401, RFC 9470's `insufficient_user_authentication`).
    pub async fn require_recent_second_factor(
        &self,
        state: &AppState,
        admin_route: bool,
    ) -> Result<(), ApiError> {
        let factors = state.logins().second_factors();
        let config = factors.config();
        let max_age = config.privileged_max_age;
        if self.second_factor_within(state.tokens().now(), max_age) {
            return Ok(());
        }
        let needed = (admin_route && config.admin_requires_second_factor)
            || factors.required(&self.user.id).await?;
        if needed {
            Err(ApiError::step_up_required(max_age))
        } else {
            Ok(())
        }
    }

    /// The login model that authenticated the request: `"session"`, `"token"` or `"hybrid"`.
    pub fn model_name(&self) -> &'static str {
        match &self.model {
            AuthModel::Session(_) => "session",
            AuthModel::Token(claims) => claims.claims().model.as_str(),
        }
    }
}

/// A caller authenticated by a cookie: the session cookie or the hybrid model's access cookie,
/// never `Authorization`. For routes a browser's own pages use (forms, `fetch` from the same
/// site): on unsafe methods the request must come from a trusted origin and carry the login's
/// CSRF token in `X-CSRF-Token` (or the `csrf_token` field of a form, see [`CsrfForm`]), else it
/// is refused with 403 before the handler runs.
///
/// A request with an `Authorization` header is refused (401): a bearer caller has no CSRF token
/// to show and needs none, so routes for both use [`AuthUser`].
///
/// ```
/// # use std::sync::Arc;
/// # use axum::body::Body;
/// # use axum::http::Request;
/// # use tessera_core::{ClientInfo, LoginModel, Password, Services, ServicesConfig, Stores, SystemClock};
/// # async fn call(app: &axum::Router, request: Request<Body>) -> (u16, String) {
/// #     use tower::ServiceExt;
/// #     let response = app.clone().oneshot(request).await.unwrap();
/// #     let status = response.status().as_u16();
/// #     let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
/// #     (status, String::from_utf8_lossy(&body).into_owned())
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let (key, _) = tessera_core::token::MasterKey::generate().unwrap();
/// # let services = Services::build(Stores::from_one(tessera_store::MemoryStore::new()),
/// #     Arc::new(SystemClock), key, ServicesConfig::default()).await.unwrap();
/// # let _follower = services.spawn_follower();
/// # let state = tessera_http::AppState::new(services, Default::default()).unwrap();
/// # let alice = state.accounts().create("alice", &Password::new("correct horse battery"), vec![]).await.unwrap();
/// use axum::{Router, routing::post};
/// use tessera_http::extract::CookieAuth;
///
/// async fn save(CookieAuth(user): CookieAuth) -> String {
///     format!("saved for {}", user.user.username)
/// }
/// let app = Router::new().route("/save", post(save)).with_state(state.clone());
/// let (secret, session) = state.sessions().start(&alice, ClientInfo::default()).await.unwrap();
/// let cookie = format!("{}={}", state.cookies().session, secret.encode());
///
/// // The session cookie without the session's CSRF token: refused before the handler runs.
/// let forged = Request::post("/save").header("cookie", &cookie).body(Body::empty()).unwrap();
/// let (status, body) = call(&app, forged).await;
/// assert_eq!(status, 403);
/// assert!(body.contains("csrf-token-missing"), "{body}");
/// // With it: let in.
/// let own_page = Request::post("/save")
///     .header("cookie", &cookie)
///     .header("x-csrf-token", session.csrf_token.encode())
///     .body(Body::empty())
///     .unwrap();
/// assert_eq!(call(&app, own_page).await, (200, "saved for alice".to_owned()));
/// // A bearer token is not a cookie login.
/// let pair = state.tokens().issue(&alice, LoginModel::Token, ClientInfo::default()).await.unwrap();
/// let bearer = Request::post("/save")
///     .header("authorization", format!("Bearer {}", pair.access_token))
///     .body(Body::empty())
///     .unwrap();
/// assert_eq!(call(&app, bearer).await.0, 401);
/// # }
/// ```
pub struct CookieAuth(pub AuthUser);

impl CookieAuth {
    /// `Ok(None)` when the request carries no cookie credential.
    async fn extract(parts: &Parts, state: &AppState) -> Result<Option<Self>, ApiError> {
        // The hybrid cookie, when it is there and valid; otherwise the session cookie. A valid
        // hybrid cookie whose request fails the CSRF rules is refused, never passed on to the
        // session cookie: the caller is the hybrid login (as on safe methods), and a request
        // made with the session's CSRF token must not act as another login.
        let session = session_secret(&parts.headers, &state.0.cookies);
        let hybrid = match HybridAuth::from_cookie(parts, state).await {
            Ok(found) => found,
            Err(e) if session.is_none() => return Err(e),
            Err(e) if e.status == axum::http::StatusCode::FORBIDDEN => return Err(e),
            Err(_) => None,
        };
        if let Some(HybridAuth { claims }) = hybrid {
            let user = token_user(state, &claims)
                .await?
                .ok_or_else(ApiError::unauthenticated)?;
            return Ok(Some(Self(AuthUser {
                user,
                model: AuthModel::Token(Box::new(claims)),
            })));
        }
        let Some(secret) = session else {
            return Ok(None);
        };
        let auth = SessionAuth::with_secret(parts, state, secret).await?;
        Ok(Some(Self(AuthUser {
            user: auth.user,
            model: AuthModel::Session(auth.session),
        })))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CookieAuth
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(ApiError::unauthenticated());
        }
        Self::extract(parts, &AppState::from_ref(state))
            .await?
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// The account a verified access token belongs to, from the accounts cache: `None` when it was
/// deleted or disabled since the token was issued.
async fn token_user(
    state: &AppState,
    claims: &VerifiedClaims,
) -> Result<Option<Arc<User>>, ApiError> {
    Ok(state
        .sessions()
        .users()
        .get(&claims.claims().sub)
        .await?
        .filter(|user| user.is_active()))
}

/// An authenticated caller with the `admin` role. Admin routes are privileged: an admin whose
/// account has a second factor (every admin, with `accounts.admin_requires_second_factor`) must
/// have used it within `accounts.privileged_max_age`, else the answer is 401 with RFC 9470's
/// `insufficient_user_authentication` (see [`Privileged`]).
///
/// ```
/// # use std::sync::Arc;
/// # use axum::body::Body;
/// # use axum::http::Request;
/// # use tessera_core::{ClientInfo, LoginModel, Password, Services, ServicesConfig, Stores, SystemClock};
/// # async fn call(app: &axum::Router, request: Request<Body>) -> (u16, String) {
/// #     use tower::ServiceExt;
/// #     let response = app.clone().oneshot(request).await.unwrap();
/// #     let status = response.status().as_u16();
/// #     let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
/// #     (status, String::from_utf8_lossy(&body).into_owned())
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let (key, _) = tessera_core::token::MasterKey::generate().unwrap();
/// # let services = Services::build(Stores::from_one(tessera_store::MemoryStore::new()),
/// #     Arc::new(SystemClock), key, ServicesConfig::default()).await.unwrap();
/// # let _follower = services.spawn_follower();
/// # let state = tessera_http::AppState::new(services, Default::default()).unwrap();
/// # let alice = state.accounts().create("alice", &Password::new("correct horse battery"), vec![]).await.unwrap();
/// use axum::{Router, routing::get};
/// use tessera_http::extract::AdminUser;
///
/// async fn keys(AdminUser(user): AdminUser) -> String {
///     format!("{} may rotate keys", user.user.username)
/// }
/// let app = Router::new().route("/keys", get(keys)).with_state(state.clone());
/// let root = state.accounts().create("root", &Password::new("correct horse battery"), vec!["admin".into()]).await.unwrap();
/// for (user, expected) in [(&alice, 403), (&root, 200)] {
///     let pair = state.tokens().issue(user, LoginModel::Token, ClientInfo::default()).await.unwrap();
///     let request = Request::get("/keys")
///         .header("authorization", format!("Bearer {}", pair.access_token))
///         .body(Body::empty())
///         .unwrap();
///     assert_eq!(call(&app, request).await.0, expected);
/// }
/// # }
/// ```
pub struct AdminUser(pub AuthUser);

impl<S: Send + Sync> FromRequestParts<S> for AdminUser
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let user = AuthUser::extract(parts, &state).await?;
        if !user.is_admin() {
            return Err(ApiError::forbidden(
                "admin-only",
                "this route needs the admin role",
            ));
        }
        // Admin routes are privileged: an admin with a second factor steps up to use them.
        user.require_recent_second_factor(&state, true).await?;
        Ok(Self(user))
    }
}

/// A caller about to take a privileged action (change the password or the email address,
/// remove a second factor, regenerate recovery codes): authenticated as [`AuthUser`] is, and,
/// when the account has a second factor, having used it within `accounts.privileged_max_age`;
/// otherwise refused with 401 and RFC 9470's `insufficient_user_authentication` (step up at
/// `POST /v1/account/step-up`, then repeat the request).
pub struct Privileged(pub AuthUser);

impl<S: Send + Sync> FromRequestParts<S> for Privileged
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let user = AuthUser::extract(parts, &state).await?;
        user.require_recent_second_factor(&state, false).await?;
        Ok(Self(user))
    }
}

/// The client: its address as the throttle sees it (the socket's, or the client behind a trusted
/// proxy), and what a login records about it.
pub struct ClientMeta {
    /// The client's address, which the login throttle counts by; `None` when the server has no
    /// socket address to go by (e.g. a router driven without `serve`).
    pub ip: Option<IpAddr>,
    /// The user agent (its first 256 characters) and the address, stored with a login so
    /// its owner can recognise it in the session list.
    pub info: ClientInfo,
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, state))
    }
}

impl ClientMeta {
    /// The client of a request with these parts.
    pub(crate) fn of(parts: &Parts, state: &AppState) -> Self {
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(UserAgent::new);
        let ClientIp(ip) = ClientIp::of(parts, state);
        Self {
            ip,
            info: ClientInfo { user_agent, ip },
        }
    }
}
