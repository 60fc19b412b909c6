//! The session model's extractors.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use tessera_core::{Session, SessionId, User};

use super::cookies::session_secret;
use crate::csrf;
use crate::problem::ApiError;
use crate::state::AppState;

/// A request authenticated by the session cookie. On unsafe methods it also enforces the CSRF
/// rules (same origin and the session's token), so a cookie-authenticated handler cannot forget
/// them. Only a request that passed every check keeps the session alive.
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
/// use axum::{Router, routing::{get, post}};
/// use tessera_http::extract::SessionAuth;
///
/// async fn page(auth: SessionAuth) -> String {
///     format!("{}'s session", auth.user.username)
/// }
/// let app = Router::new()
///     .route("/page", get(page))
///     .route("/change", post(page))
///     .with_state(state.clone());
/// let (secret, session) = state.sessions().start(&alice, ClientInfo::default()).await.unwrap();
/// let cookie = format!("{}={}", state.cookies().session, secret.encode());
/// let read = Request::get("/page").header("cookie", &cookie).body(Body::empty()).unwrap();
/// assert_eq!(call(&app, read).await, (200, "alice's session".to_owned()));
/// // An unsafe method needs the session's CSRF token, and a trusted origin.
/// let forged = Request::post("/change")
///     .header("cookie", &cookie)
///     .header("origin", "https://evil.example")
///     .header("x-csrf-token", session.csrf_token.encode())
///     .body(Body::empty())
///     .unwrap();
/// assert_eq!(call(&app, forged).await.0, 403);
/// // After logout, the cookie is refused at once.
/// state.sessions().end(&session.handle).await.unwrap();
/// let after = Request::get("/page").header("cookie", &cookie).body(Body::empty()).unwrap();
/// assert_eq!(call(&app, after).await.0, 401);
/// # }
/// ```
pub struct SessionAuth {
    /// The live session the cookie names, with its activity recorded by this request.
    pub session: Arc<Session>,
    /// The account the session belongs to.
    pub user: Arc<User>,
    /// The secret from the cookie, which the session routes hand back to the session service
    /// (logout, session data).
    pub secret: SessionId,
}

impl<S: Send + Sync> FromRequestParts<S> for SessionAuth
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Self::extract(parts, &AppState::from_ref(state)).await
    }
}

impl SessionAuth {
    pub(crate) async fn extract(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = session_secret(&parts.headers, &state.0.cookies)
            .ok_or_else(ApiError::unauthenticated)?;
        Self::with_secret(parts, state, secret).await
    }

    /// The checks of [`SessionAuth`] for the secret already read from the request's cookie.
    pub(crate) async fn with_secret(
        parts: &Parts,
        state: &AppState,
        secret: SessionId,
    ) -> Result<Self, ApiError> {
        let unsafe_method = csrf::is_unsafe(&parts.method);
        if unsafe_method {
            csrf::check_same_origin(&parts.headers, &state.0.trusted_origins)?;
        }
        let (mut session, user) = state
            .sessions()
            .find(&secret)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        if unsafe_method {
            csrf::check_session_token(&parts.headers, &session.csrf_token)?;
        }
        check_context(parts, state, &session, &user).await?;
        if !state.sessions().record_activity(&mut session).await? {
            return Err(ApiError::unauthenticated());
        }
        Ok(Self {
            session,
            user,
            secret,
        })
    }
}

/// Binding hints: a session used from a new network and user agent at once is recorded; with
/// `accounts.new_context = "step_up"` it is refused unless its second factor is recent, on every
/// route but the step-up itself (where it shows one).
async fn check_context(
    parts: &Parts,
    state: &AppState,
    session: &Session,
    user: &User,
) -> Result<(), ApiError> {
    // Every request with a session passes here: the address alone first, and the user agent
    // read only when the network changed (the rare case).
    let crate::client_ip::ClientIp(ip) = crate::client_ip::ClientIp::of(parts, state);
    if !matches!((session.client.ip, ip), (Some(a), Some(b))
        if !tessera_core::login_context::same_network(a, b))
    {
        return Ok(());
    }
    let seen = super::ClientMeta::of(parts, state).info;
    let contexts = state.logins().contexts();
    if !contexts
        .observe(
            session.handle.as_str(),
            &user.id,
            tessera_core::LoginModel::Session,
            &session.client,
            &seen,
        )
        .await
    {
        return Ok(());
    }
    let max_age = state.logins().second_factors().config().privileged_max_age;
    let stepping_up = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|path| {
            let path = path.as_str();
            [
                "/v1/account/step-up",
                "/v1/account/step-up/passkey",
                "/v1/account/step-up/passkey/options",
            ]
            .iter()
            .any(|route| path.ends_with(route))
        });
    if contexts.policy() == tessera_core::login_context::NewContextPolicy::StepUp
        && !stepping_up
        && !session
            .auth
            .second_factor_within(state.tokens().now(), max_age)
    {
        return Err(ApiError::login_moved(max_age));
    }
    Ok(())
}

/// The device token in the browser's device cookie, if any (see
/// [`DEVICE_COOKIE`](super::DEVICE_COOKIE)).
pub struct DeviceCookie(pub Option<String>);

impl FromRequestParts<AppState> for DeviceCookie {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(super::cookies::cookie_value(
            &parts.headers,
            &state.0.cookies.device,
        )))
    }
}

/// The session secret the browser already has, whether or not it names a live session (a login
/// ends that session: the new login never keeps an id the client brought).
pub struct SessionCookie(pub Option<SessionId>);

impl FromRequestParts<AppState> for SessionCookie {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(session_secret(&parts.headers, &state.0.cookies)))
    }
}
