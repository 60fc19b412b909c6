//! Routes that need a role.

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use super::AuthUser;
use crate::problem::ApiError;
use crate::state::AppState;

/// A role a route can require with [`RequireRole`]: a type naming one of the roles an account
/// holds (`tessera user roles alice editor`, or `PUT /v1/admin/users/{id}/roles`).
///
/// ```
/// use tessera_http::extract::Role;
///
/// /// Editors of the catalogue.
/// struct Editor;
///
/// impl Role for Editor {
///     const NAME: &'static str = "editor";
/// }
/// assert_eq!(Editor::NAME, "editor");
/// ```
pub trait Role: Send + Sync + 'static {
    /// Whether the role's routes are privileged: a caller with a second factor must have used it
    /// recently (see [`AuthUser::require_recent_second_factor`]).
    const PRIVILEGED: bool = false;
    /// The role's name, as stored with the account.
    const NAME: &'static str;
}

/// The `admin` role, which Tessera's own `/v1/admin` routes require.
pub struct Admin;

impl Role for Admin {
    const NAME: &'static str = "admin";
    const PRIVILEGED: bool = true;
}

/// A caller authenticated by any model (as [`AuthUser`]) whose account has the role `R`. Without
/// a valid credential the request is refused with 401; with one but without the role, with 403
/// (`urn:tessera:problem:missing-role`). Roles are read from this node's accounts cache, which the
/// change feed keeps current: a role taken away is refused on the next request, on every node.
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
/// use tessera_http::extract::{Admin, RequireRole, Role};
///
/// /// Editors of the catalogue.
/// struct Editor;
/// impl Role for Editor {
///     const NAME: &'static str = "editor";
/// }
///
/// async fn audit(RequireRole { user, .. }: RequireRole<Admin>) -> String {
///     format!("{} may read the audit log", user.user.username)
/// }
/// async fn edit(_: RequireRole<Editor>) -> &'static str {
///     "edited"
/// }
/// let app = Router::new()
///     .route("/audit", get(audit))
///     .route("/edit", get(edit))
///     .with_state(state.clone());
/// let bob = state.accounts().create("bob", &Password::new("correct horse battery"), vec!["editor".into()]).await.unwrap();
/// let (secret, _) = state.sessions().start(&bob, ClientInfo::default()).await.unwrap();
/// let get = |path: &str| Request::get(path)
///     .header("cookie", format!("{}={}", state.cookies().session, secret.encode()))
///     .body(Body::empty())
///     .unwrap();
/// assert_eq!(call(&app, get("/edit")).await, (200, "edited".to_owned()));
/// let (status, body) = call(&app, get("/audit")).await;
/// assert_eq!(status, 403);
/// assert!(body.contains("missing-role"), "{body}");
/// # }
/// ```
pub struct RequireRole<R: Role> {
    /// The caller.
    pub user: AuthUser,
    /// The role that was required.
    pub role: PhantomData<R>,
}

impl<S: Send + Sync, R: Role> FromRequestParts<S> for RequireRole<R>
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let user = AuthUser::extract(parts, &state).await?;
        user.require_role(R::NAME)?;
        if R::PRIVILEGED {
            user.require_recent_second_factor(&state, true).await?;
        }
        Ok(Self {
            user,
            role: PhantomData,
        })
    }
}
