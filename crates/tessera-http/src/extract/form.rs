//! HTML forms that change something, posted by a logged-in browser.

use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;

use super::{AuthUser, CookieAuth};
use crate::csrf::CSRF_HEADER;
use crate::json::JsonOrForm;
use crate::problem::ApiError;
use crate::state::AppState;

/// The form field that carries the login's CSRF token in an HTML form.
pub const CSRF_FIELD: &str = "csrf_token";

/// An `application/x-www-form-urlencoded` form posted by a browser logged in with a cookie
/// (session or hybrid model), with the CSRF rules of [`CookieAuth`]: the request must come from
/// a trusted origin, and the login's CSRF token must be in the form's `csrf_token` field (or in
/// `X-CSRF-Token`). Put the token in the page with [`AuthUser::csrf_token`]. The other fields are
/// read as a `T`; a wrong or missing token is a 403 before the body is looked at further, and a
/// form without the fields `T` needs is a 422.
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
/// use serde::Deserialize;
/// use tessera_http::extract::CsrfForm;
///
/// #[derive(Deserialize)]
/// struct Comment {
///     text: String,
/// }
///
/// async fn comment(CsrfForm { user, form }: CsrfForm<Comment>) -> String {
///     format!("{} wrote {:?}", user.user.username, form.text)
/// }
/// let app = Router::new().route("/comments", post(comment)).with_state(state.clone());
/// let (secret, session) = state.sessions().start(&alice, ClientInfo::default()).await.unwrap();
/// let post_form = |body: String| Request::post("/comments")
///     .header("cookie", format!("{}={}", state.cookies().session, secret.encode()))
///     .header("content-type", "application/x-www-form-urlencoded")
///     .body(Body::from(body))
///     .unwrap();
/// // The page's form carries the token (`user.csrf_token(&state)` put it there).
/// let token = session.csrf_token.encode();
/// let (status, body) = call(&app, post_form(format!("text=hi&csrf_token={token}"))).await;
/// assert_eq!((status, body.as_str()), (200, "alice wrote \"hi\""));
/// // Another site's form does not know it.
/// let (status, body) = call(&app, post_form("text=hi".into())).await;
/// assert_eq!(status, 403);
/// assert!(body.contains("csrf-token-missing"), "{body}");
/// # }
/// ```
pub struct CsrfForm<T> {
    /// The caller.
    pub user: AuthUser,
    /// The form's fields, without the CSRF token.
    pub form: T,
}

impl<S, T> FromRequest<S> for CsrfForm<T>
where
    S: Send + Sync,
    AppState: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let tessera = AppState::from_ref(state);
        if req.headers().contains_key(header::AUTHORIZATION) {
            return Err(ApiError::unauthenticated());
        }
        if !crate::json::is_form(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "this route takes an HTML form: Content-Type: application/x-www-form-urlencoded",
            ));
        }
        let (mut parts, body) = req.into_parts();
        let JsonOrForm(pairs) = JsonOrForm::<Vec<(String, String)>>::from_request(
            Request::from_parts(parts.clone(), body),
            state,
        )
        .await?;
        let (tokens, rest): (Vec<_>, Vec<_>) =
            pairs.into_iter().partition(|(name, _)| name == CSRF_FIELD);
        let from_form = !parts.headers.contains_key(CSRF_HEADER);
        if from_form {
            match tokens.as_slice() {
                [] => {}
                [(_, token)] => {
                    let value = HeaderValue::from_str(token).map_err(|_| {
                        ApiError::forbidden(
                            "csrf-token-invalid",
                            "the form's csrf_token does not match this login's CSRF token",
                        )
                    })?;
                    parts.headers.insert(CSRF_HEADER, value);
                }
                _ => {
                    return Err(ApiError::forbidden(
                        "csrf-token-invalid",
                        "the form has more than one csrf_token field",
                    ));
                }
            }
        }
        let user = match CookieAuth::extract(&parts, &tessera).await {
            Ok(Some(CookieAuth(user))) => user,
            Ok(None) => return Err(ApiError::unauthenticated()),
            // The rules are the header's; say what the form lacks.
            Err(e) if from_form && e.slug() == "csrf-token-missing" => {
                return Err(ApiError::forbidden(
                    "csrf-token-missing",
                    "this form needs the login's CSRF token in its csrf_token field",
                ));
            }
            Err(e) if from_form && e.slug() == "csrf-token-invalid" => {
                return Err(ApiError::forbidden(
                    "csrf-token-invalid",
                    "the form's csrf_token does not match this login's CSRF token",
                ));
            }
            Err(e) => return Err(e),
        };
        let encoded = serde_urlencoded::to_string(&rest)
            .map_err(|e| ApiError::bad_request("unreadable-body", e.to_string()))?;
        let form = serde_urlencoded::from_str::<T>(&encoded).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!(
                    "the form does not have the expected fields: {}",
                    crate::json::without_values(&e.to_string())
                ),
            )
        })?;
        Ok(Self { user, form })
    }
}
