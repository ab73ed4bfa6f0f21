//! The dashboard (`/`, server-rendered HTML, see [`pages`]) and the read API (`/api/...`, JSON
//! as the `--json` outputs, see [`api`]) over a state dir: mounted by `gitops serve` next to its
//! webhooks, and served alone by `gitops ui --listen ADDR`.
//!
//! Access: every request passes [`access`] first, which lets loopback peers read, asks the
//! others for a token (`--ui-token-env NAME`), and puts a [`Viewer`] in the request's
//! extensions saying who is looking and whether they may act (approve, reject).

pub mod access;
pub mod api;
mod approve;
pub mod command;
mod login;
pub mod pages;

use std::sync::Arc;

use axum::{Extension, Router, middleware};
use gitops_core::engine::Engine;
use tokio_util::sync::CancellationToken;

use self::access::{Access, Gate};

/// What the handlers of the dashboard and the API share.
#[derive(Clone)]
pub struct UiState {
    /// The engine over the state dir (its ledger, stored logs, environments, approvals).
    pub engine: Arc<Engine>,
    /// The address links use (`--public-url`), without a trailing slash; `None`: links are
    /// relative to the host the request came to.
    pub public_url: Option<String>,
}

/// Who is looking at the dashboard or the API, set by the access layer on every request it
/// let through.
#[derive(Clone, Debug, Default)]
pub struct Viewer {
    /// The name of the token the request carried (the NAME of its `--ui-token-env NAME`),
    /// when it carried a valid one; `None` for a loopback peer without a token.
    pub name: Option<String>,
    /// For a viewer signed in by the login form's cookie: the value forms that act must send
    /// back as their `csrf` field (a request with `Authorization: Bearer` needs none).
    pub csrf: Option<String>,
    /// For a viewer signed in by cookie: when the session ends (Unix seconds); what it opened
    /// (a live log) ends then too.
    pub until: Option<u64>,
}

impl Viewer {
    /// Whether this viewer may approve or reject: only with a token, whose name is recorded
    /// as the approver.
    pub fn can_act(&self) -> bool {
        self.name.is_some()
    }
}

/// The dashboard and the API, with their state: the routes alone, without the access layer
/// ([`with_access`] adds it, and the login form).
pub fn router(state: UiState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(approve::routes())
        .merge(pages::routes())
        .with_state(state)
}

/// The dashboard, the API and the login form behind the access rules `access`; live log
/// streams end when `shutdown` is cancelled.
pub fn with_access(state: UiState, access: Access, shutdown: CancellationToken) -> Router {
    let gate = Gate {
        access: access.clone(),
        public_url: state.public_url.clone(),
    };
    let context = api::Context::new(shutdown, access.has_tokens());
    router(state)
        .layer(Extension(context))
        .merge(login::routes().with_state(gate.clone()))
        .layer(middleware::from_fn_with_state(gate, access::check))
}
