//! Operations: liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::{ApiError, Problem, ServiceProblems};
use crate::state::AppState;

/// The answer of the health checks when all is well (a failure is a problem document instead).
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store answers.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "The store cannot be reached", body = Problem, content_type = "application/problem+json"),
        ServiceProblems,
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // A readiness probe wants an answer quickly, not the store's full connection timeout.
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.health().ping()).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(tessera_core::StoreError::Unavailable(
                "the store did not answer within 2 s".into(),
            )
            .into());
        }
    }
    Ok(Json(Health { status: "ok" }))
}
