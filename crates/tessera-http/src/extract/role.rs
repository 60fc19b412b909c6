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
    /// The role's name, as stored with the account.
    const NAME: &'static str;
}

/// The `admin` role, which Tessera's own `/v1/admin` routes require.
pub struct Admin;

impl Role for Admin {
    const NAME: &'static str = "admin";
}

/// A caller authenticated by any model (as [`AuthUser`]) whose account has the role `R`. Without
/// a valid credential the request is refused with 401; with one but without the role, with 403
/// (`urn:tessera:problem:missing-role`). Roles are read from this node's accounts cache, which the
/// change feed keeps current: a role taken away is refused on the next request, on every node.
///
/// ```
/// use axum::{Router, routing::get};
/// use tessera_http::AppState;
/// use tessera_http::extract::{Admin, RequireRole};
///
/// async fn audit(RequireRole { user, .. }: RequireRole<Admin>) -> String {
///     format!("{} may read the audit log", user.user.username)
/// }
///
/// let routes: Router<AppState> = Router::new().route("/audit", get(audit));
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
        let user = AuthUser::extract(parts, &AppState::from_ref(state)).await?;
        user.require_role(R::NAME)?;
        Ok(Self {
            user,
            role: PhantomData,
        })
    }
}
