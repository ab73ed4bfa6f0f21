//! The read API: `GET /api/runs`, `/api/runs/{id}`, `/api/runs/{id}/stages/{stage}/log`,
//! `/api/environments`, `/api/environments/{name}/history`, JSON as the `--json` outputs.

use axum::Router;

use super::UiState;

/// The API's routes.
pub fn routes() -> Router<UiState> {
    Router::new()
}
