//! Admin routes: the signing keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use tessera_core::token::KeyInfo;
use utoipa::ToSchema;

use crate::extract::AdminUser;
use crate::problem::{ApiError, Problem, ServiceProblems};
use crate::state::AppState;

/// A signing key as admins see it (never its private part).
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    #[schema(example = "k_Qm9uam91ciBhIHRvdXMh")]
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub algorithm: String,
    /// `active`, `rotated` or `retired`.
    pub status: String,
    /// In the JWKS, verifying tokens.
    pub published: bool,
    /// Signing new tokens.
    pub signing: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: tessera_core::Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub rotated_at: Option<tessera_core::Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retired_at: Option<tessera_core::Timestamp>,
}

impl From<KeyInfo> for KeyView {
    fn from(k: KeyInfo) -> Self {
        Self {
            kid: k.kid,
            algorithm: k.algorithm.to_string(),
            status: k.status.as_str().to_owned(),
            published: k.published,
            signing: k.signing,
            created_at: k.created_at,
            rotated_at: k.rotated_at,
            retired_at: k.retired_at,
        }
    }
}

/// List the signing keys.
#[utoipa::path(
    get, path = "/v1/admin/keys", tag = "admin",
    security(("bearer" = []), ("session_cookie" = [])),
    responses(
        (status = 200, body = Vec<KeyView>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    let keys = state.tokens().keyring().list().await?;
    Ok(Json(keys.into_iter().map(KeyView::from).collect()))
}

/// Rotate the signing key.
///
/// New tokens are signed with a new key at once; tokens signed with the previous key stay valid
/// until they expire, then that key leaves the JWKS.
#[utoipa::path(
    post, path = "/v1/admin/keys/rotate", tag = "admin",
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 201, description = "The new signing key", body = KeyView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let key = state.tokens().rotate_key(Some(&admin.user.id)).await?;
    Ok((StatusCode::CREATED, Json(key.into())))
}

/// Retire a key: every token it signed stops working at once.
#[utoipa::path(
    post, path = "/v1/admin/keys/{kid}/retire", tag = "admin",
    params(("kid" = String, Path, description = "The key id")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Retired"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key, or retired already", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn retire_key(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(kid): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .tokens()
        .retire_key(&kid, Some(&admin.user.id))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no key {kid:?} that is not retired already"
        )))
    }
}
