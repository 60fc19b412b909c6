//! The session's data, for the application's own routes.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tessera_core::{Session, User};

use super::SessionAuth;
use crate::problem::ApiError;
use crate::state::AppState;

/// The session's data (a JSON object kept with the session on the server), for a caller
/// authenticated by the session cookie; extracted as [`SessionAuth`] is, so unsafe methods need
/// the session's CSRF token. Other models keep no data on the server: their callers are refused
/// with 401, and so is a request that carries another model's credential beside the session
/// cookie (`Authorization`, or the hybrid cookie), which other extractors would take for the
/// caller: the data changed must be that caller's.
///
/// Changes follow the rule of `PATCH /v1/session/data`: each is applied to the latest stored
/// version and written with a compare-and-swap, so two requests changing the data at once (on one
/// node or on several) never lose each other's change.
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
/// use axum::{Json, Router, routing::post};
/// use serde_json::{Value, json};
/// use tessera_http::ApiError;
/// use tessera_http::extract::SessionData;
///
/// /// Adds an item to the cart kept in the session.
/// async fn add_to_cart(data: SessionData, Json(item): Json<String>) -> Result<Json<Value>, ApiError> {
///     let updated = data
///         .update(|data| {
///             let cart = data.entry("cart").or_insert_with(|| json!([]));
///             if let Some(items) = cart.as_array_mut() {
///                 items.push(Value::String(item.clone()));
///             }
///         })
///         .await?;
///     Ok(Json(updated))
/// }
/// let app = Router::new().route("/cart", post(add_to_cart)).with_state(state.clone());
/// let (secret, session) = state.sessions().start(&alice, ClientInfo::default()).await.unwrap();
/// let add = |item: &str| Request::post("/cart")
///     .header("cookie", format!("{}={}", state.cookies().session, secret.encode()))
///     .header("x-csrf-token", session.csrf_token.encode())
///     .header("content-type", "application/json")
///     .body(Body::from(format!("{item:?}")))
///     .unwrap();
/// call(&app, add("tea")).await;
/// let (status, body) = call(&app, add("milk")).await;
/// assert_eq!(status, 200);
/// assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"cart": ["tea", "milk"]}));
/// # }
/// ```
pub struct SessionData {
    auth: SessionAuth,
    state: AppState,
}

impl SessionData {
    /// The account the session belongs to.
    pub fn user(&self) -> &User {
        &self.auth.user
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.auth.session
    }

    /// The data as this request found it.
    pub fn get(&self) -> Value {
        self.auth.session.data.to_value()
    }

    /// The value under `key`, as a `T`; `None` when it is missing or is not a `T`.
    pub fn value<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let data = self.get();
        data.get(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Applies a JSON merge patch (RFC 7396) and returns the new data: `null` removes a key.
    pub async fn patch(&self, patch: &Value) -> Result<Value, ApiError> {
        Ok(self
            .state
            .sessions()
            .patch_data(&self.auth.secret, patch)
            .await?)
    }

    /// Changes the data with `change` and returns the new data. `change` is given the latest
    /// stored data and may run more than once (again on a newer version when another request
    /// wrote in between), so it must only change the map it is given. The data must stay within
    /// `sessions.max_data_bytes` (413 otherwise).
    pub async fn update(
        &self,
        mut change: impl FnMut(&mut Map<String, Value>),
    ) -> Result<Value, ApiError> {
        Ok(self
            .state
            .sessions()
            .update_data(&self.auth.secret, |data| {
                if !data.is_object() {
                    *data = Value::Object(Map::new());
                }
                if let Some(map) = data.as_object_mut() {
                    change(map);
                }
            })
            .await?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SessionData
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let live_hybrid =
            super::cookies::cookie_value(&parts.headers, &state.0.cookies.hybrid_access)
                .is_some_and(|token| state.tokens().verify(&token).is_ok());
        if parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
            || live_hybrid
        {
            return Err(ApiError::unauthenticated());
        }
        let auth = SessionAuth::extract(parts, &state).await?;
        Ok(Self { auth, state })
    }
}
