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
/// with 401.
///
/// Changes follow the rule of `PATCH /v1/session/data`: each is applied to the latest stored
/// version and written with a compare-and-swap, so two requests changing the data at once (on one
/// node or on several) never lose each other's change.
///
/// ```
/// use axum::{Json, Router, routing::post};
/// use serde_json::{Value, json};
/// use tessera_http::{ApiError, AppState};
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
///
/// let routes: Router<AppState> = Router::new().route("/cart", post(add_to_cart));
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
    pub async fn update(&self, mut change: impl FnMut(&mut Map<String, Value>)) -> Result<Value, ApiError> {
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
        let auth = SessionAuth::extract(parts, &state).await?;
        Ok(Self { auth, state })
    }
}
