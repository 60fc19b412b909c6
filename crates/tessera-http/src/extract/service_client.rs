//! Service clients: resource servers that authenticate with HTTP Basic as one of
//! `tokens.introspection_clients` (token introspection, the revocation stream).

use axum::extract::OptionalFromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;

use crate::state::AppState;

/// A request carrying the HTTP Basic credentials of a configured service client. Take it as
/// `Option<ServiceClient>`: a route decides what a caller without them gets.
pub struct ServiceClient;

impl OptionalFromRequestParts<AppState> for ServiceClient {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(is_service_client(state, &parts.headers).then_some(Self))
    }
}

fn is_service_client(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials)
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some((id, secret)) = std::str::from_utf8(&decoded)
        .ok()
        .and_then(|s| s.split_once(':'))
    else {
        return false;
    };
    // Every client is compared, so timing does not tell which id exists.
    state
        .0
        .config
        .introspection_clients
        .iter()
        .fold(false, |found, c| {
            let id_ok = tessera_core::secret::secrets_equal(c.id.as_bytes(), id.as_bytes());
            let secret_ok =
                tessera_core::secret::secrets_equal(c.secret.as_bytes(), secret.as_bytes());
            found | (id_ok & secret_ok)
        })
}
