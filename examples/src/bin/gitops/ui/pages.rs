//! The dashboard's pages, rendered on the server.

use axum::Router;

use super::UiState;

/// The dashboard's routes.
pub fn routes() -> Router<UiState> {
    Router::new()
}
