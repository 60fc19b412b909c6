//! Admin routes: the signing keys, users, and the audit log.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tessera_core::token::KeyInfo;
use tessera_core::{CurrentLogin, UserId};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{AdminUser, AuthUser};
use crate::json::ApiJson;
use crate::problem::{ApiError, JsonBodyProblems, Problem, ServiceProblems};
use crate::routes::me::{Ended, LoginView};
use crate::state::AppState;

/// A signing key as admins see it (never its private part).
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// The key id, as in the `kid` header of the tokens it signs and in the JWKS.
    #[schema(example = "k_Qm9uam91ciBhIHRvdXMh")]
    pub kid: String,
    /// The JWS algorithm the key signs with.
    #[schema(example = "EdDSA")]
    pub algorithm: String,
    /// `active`, `rotated` or `retired`.
    pub status: String,
    /// In the JWKS, verifying tokens.
    pub published: bool,
    /// Signing new tokens.
    pub signing: bool,
    /// When the key was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: tessera_core::Timestamp,
    /// When a newer key replaced it for signing; it goes on verifying the tokens it signed until
    /// they expire. Absent while the key is active.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub rotated_at: Option<tessera_core::Timestamp>,
    /// When an admin retired it: from then on it verifies nothing. Absent unless retired.
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
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, body = Vec<KeyView>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
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
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 201, description = "The new signing key", body = KeyView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
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
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Retired"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
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

// ---------------------------------------------------------------------------------------------
// Users

/// A user as admins see it.
#[derive(Serialize, ToSchema)]
pub struct AdminUserView {
    /// The user's id (`usr_…`), as the `/v1/admin/users/{id}` routes take it.
    pub id: String,
    /// The name the user logs in with (NFKC-normalized, lower-case).
    pub username: String,
    /// The user's roles; `admin` opens these routes.
    pub roles: Vec<String>,
    /// A disabled account keeps its data but can neither log in nor use the sessions and tokens
    /// it already holds.
    pub disabled: bool,
    /// When the account was registered.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: tessera_core::Timestamp,
    /// When the account last changed: its password, roles, or disabled state.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: tessera_core::Timestamp,
}

impl From<&tessera_core::User> for AdminUserView {
    fn from(u: &tessera_core::User) -> Self {
        Self {
            id: u.id.to_string(),
            username: u.username.to_string(),
            roles: u.roles.clone(),
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// The query of `GET /v1/admin/users`: a page of users, in username order.
#[derive(Deserialize, IntoParams)]
pub struct Page {
    /// The cursor: the `next` of the previous page (a username; anything else is a 422).
    #[param(nullable = false, min_length = 1, max_length = 64)]
    pub after: Option<String>,
    /// 1 to 200; 50 by default.
    #[param(nullable = false, minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// One page of users, in username order.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    /// At most `limit` users.
    pub users: Vec<AdminUserView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(50) {
        n @ 1..=200 => Ok(n),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-limit",
            "limit must be between 1 and 200",
        )),
    }
}

/// List users, in username order.
#[utoipa::path(
    get, path = "/v1/admin/users", tag = "admin", params(Page),
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, body = UserPage),
        (status = 400, description = "A query parameter is malformed or given twice", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad limit", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(page): Query<Page>,
) -> Result<Json<UserPage>, ApiError> {
    let limit = page_limit(page.limit)?;
    let users = state.accounts().list(page.after.as_deref(), limit).await?;
    let next = (users.len() == limit)
        .then(|| users.last().map(|u| u.username.to_string()))
        .flatten();
    Ok(Json(UserPage {
        users: users.iter().map(AdminUserView::from).collect(),
        next,
    }))
}

/// The user a URL names. An id that is not in the shape of ours names no user, as an unknown one
/// does: the same 404, without a store lookup.
pub(crate) async fn target(state: &AppState, id: &str) -> Result<tessera_core::User, ApiError> {
    let user = match UserId::parse(id) {
        Some(id) => state.accounts().user(&id).await?,
        None => None,
    };
    user.ok_or_else(|| ApiError::not_found(format!("no user {id:?}")))
}

/// One user.
#[utoipa::path(
    get, path = "/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, body = AdminUserView),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<Json<AdminUserView>, ApiError> {
    Ok(Json(AdminUserView::from(&target(&state, &id).await?)))
}

async fn set_disabled(
    state: &AppState,
    admin: &AuthUser,
    id: &str,
    disabled: bool,
) -> Result<Json<AdminUserView>, ApiError> {
    let user = target(state, id).await?;
    if disabled && user.id == admin.user.id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "self-lockout",
            "admins cannot disable themselves",
        ));
    }
    state
        .logins()
        .set_disabled(&user.id, disabled, Some(&admin.user.id))
        .await?;
    Ok(Json(AdminUserView::from(&target(state, id).await?)))
}

/// Disable a user: they cannot log in, and every credential they hold stops working at once.
#[utoipa::path(
    post, path = "/v1/admin/users/{id}/disable", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = AdminUserView),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin cannot disable themselves", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn disable_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<AdminUserView>, ApiError> {
    set_disabled(&state, &admin, &id, true).await
}

/// Enable a disabled user again.
#[utoipa::path(
    post, path = "/v1/admin/users/{id}/enable", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = AdminUserView),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn enable_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<AdminUserView>, ApiError> {
    set_disabled(&state, &admin, &id, false).await
}

/// The roles a user is to have.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// Every role the user keeps, replacing the current ones; names are 1–32 letters, digits or
    /// `- _ . :`, and duplicates count once. Empty removes every role.
    #[schema(example = json!(["admin"]))]
    pub roles: Vec<RoleName>,
}

/// A role name: 1–32 letters, digits or `- _ . :`.
#[derive(Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9._:-]{1,32}$")]
pub struct RoleName(String);

/// Replace a user's roles. Access tokens carry roles, so the user's current access tokens stop
/// working; the next refresh carries the new roles.
#[utoipa::path(
    put, path = "/v1/admin/users/{id}/roles", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    request_body = Roles,
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = AdminUserView),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin cannot remove their own admin role", body = Problem, content_type = "application/problem+json"),
        JsonBodyProblems,
        ServiceProblems,
    )
)]
pub async fn set_roles(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Roles>,
) -> Result<Json<AdminUserView>, ApiError> {
    let user = target(&state, &id).await?;
    let roles: Vec<String> = body.roles.into_iter().map(|RoleName(r)| r).collect();
    if user.id == admin.user.id && !roles.iter().any(|r| r == "admin") {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "self-lockout",
            "admins cannot remove their own admin role",
        ));
    }
    state
        .logins()
        .set_roles(&user.id, &roles, Some(&admin.user.id))
        .await?;
    Ok(Json(AdminUserView::from(&target(&state, &id).await?)))
}

/// A user's logins.
#[utoipa::path(
    get, path = "/v1/admin/users/{id}/sessions", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, body = Vec<LoginView>),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn user_sessions(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<Json<Vec<LoginView>>, ApiError> {
    let user = target(&state, &id).await?;
    let logins = state.logins().list(&user.id, &CurrentLogin::None).await?;
    Ok(Json(logins.into_iter().map(LoginView::from).collect()))
}

/// Force a user out: every session, login and access token of theirs is refused at once.
#[utoipa::path(
    post, path = "/v1/admin/users/{id}/logout", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 200, body = Ended),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn force_logout(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<Ended>, ApiError> {
    let user = target(&state, &id).await?;
    let ended = state
        .logins()
        .force_logout(&user.id, Some(&admin.user.id))
        .await?;
    Ok(Json(Ended { ended }))
}

/// Remove a user's second factor (TOTP and recovery codes), for a user who lost both.
///
/// Their logins need only the password again, until they set one up anew. Check who asks
/// before doing this: it is how an attacker who has the password would like to get in.
#[utoipa::path(
    delete, path = "/v1/admin/users/{id}/totp", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated, or the admin's second factor was not used recently enough", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user, or no TOTP set up", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn remove_totp(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let user = target(&state, &id).await?;
    if state
        .logins()
        .second_factors()
        .remove_totp(&user.id, Some(&admin.user.id))
        .await?
    {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "user {id:?} has no TOTP set up"
        )))
    }
}

/// Send a user a new verification mail for their address.
///
/// For an account whose address is not verified yet; earlier codes stop working. Written in
/// the language of the admin's `Accept-Language` when the templates have it.
#[utoipa::path(
    post, path = "/v1/admin/users/{id}/email/verification", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 202, description = "A verification mail is queued"),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user, or this server sends no mail", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user has no address, or it is verified already", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn resend_verification(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    let user = target(&state, &id).await?;
    match &user.email {
        None => {
            return Err(tessera_core::Error::Conflict(
                "the user has no email address to verify".into(),
            )
            .into());
        }
        Some(email) if email.verified => {
            return Err(tessera_core::Error::Conflict(
                "the user's email address is verified already".into(),
            )
            .into());
        }
        Some(_) => {}
    }
    let language = crate::routes::account::mail_language(&state, &headers);
    state
        .account_mail()
        .send_verification(&user, &language, Some(&admin.user.id))
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Delete a user: the account and everything of it are erased, and every credential of it stops
/// working at once. The audit log keeps the user id (not the username) and records the deletion
/// with the admin who asked. A deletion that failed half-way leaves the account disabled: asking
/// again finishes it.
#[utoipa::path(
    delete, path = "/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "The user id")),
    security(("bearer" = []), ("session_cookie" = [], "csrf_token" = []), ("hybrid_cookies" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin cannot delete themselves here (use DELETE /v1/account)", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn delete_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = target(&state, &id).await?;
    if user.id == admin.user.id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "self-lockout",
            "admins cannot delete themselves here; use DELETE /v1/account",
        ));
    }
    if !state
        .logins()
        .delete_account(&user.id, Some(&admin.user.id))
        .await?
    {
        return Err(ApiError::not_found(format!("no user {id:?}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Audit log

/// The query of `GET /v1/admin/events`: a page of the audit log, newest first.
#[derive(Deserialize, IntoParams)]
pub struct EventPage {
    /// The cursor: the `next` of the previous page (events older than this id).
    #[param(nullable = false)]
    pub before: Option<i64>,
    /// 1 to 200; 50 by default.
    #[param(nullable = false, minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// One security event of the audit log.
#[derive(Serialize, ToSchema)]
pub struct EventView {
    /// The event's position in the log: ids increase with time.
    pub id: i64,
    /// When it happened.
    #[schema(value_type = String, format = DateTime)]
    pub at: tessera_core::Timestamp,
    /// login_succeeded, login_failed, logout, token_issued, token_refreshed,
    /// refresh_reuse_detected, token_revoked, key_rotated, key_retired, password_changed,
    /// forced_logout, user_disabled, user_enabled, roles_changed, account_deleted.
    pub kind: String,
    /// The account the event concerns (`usr_…`); for a key rotation or retirement, the admin who
    /// acted. Absent when there is none, as for a failed login.
    pub user_id: Option<String>,
    /// What else was recorded, depending on `kind`: e.g. `by` (the admin who acted), `kid`, or the
    /// login model and attempted username of a failed login.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// One page of the audit log.
#[derive(Serialize, ToSchema)]
pub struct EventList {
    /// Newest first.
    pub events: Vec<EventView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next: Option<i64>,
}

/// The audit log of security events, newest first.
#[utoipa::path(
    get, path = "/v1/admin/events", tag = "admin", params(EventPage),
    security(("bearer" = []), ("session_cookie" = []), ("hybrid_cookies" = [])),
    responses(
        (status = 200, body = EventList),
        (status = 400, description = "A query parameter is malformed or given twice", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated (or the caller's login ended)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad limit", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn events(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(page): Query<EventPage>,
) -> Result<Json<EventList>, ApiError> {
    let limit = page_limit(page.limit)?;
    let events = state.logins().events(page.before, limit).await?;
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(EventList {
        events: events
            .into_iter()
            .map(|e| EventView {
                id: e.id,
                at: e.at,
                kind: e.kind.as_str().to_owned(),
                user_id: e.user_id.map(|u| u.to_string()),
                detail: e.detail,
            })
            .collect(),
        next,
    }))
}
