//! `POST /api/runs/{id}/stages/{stage}/approve` and `.../reject`: a viewer with a token
//! decides on a deployment waiting for approval, recorded under the token's name. A request
//! with `Authorization: Bearer` gets JSON; a form of the dashboard (signed in by cookie) must
//! send the session's `csrf` value (field `csrf` or header `X-CSRF-Token`) and is redirected
//! to the run's page.

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Extension, Json, Router};
use gitops_core::Error;

use super::access::{error, same_origin, same_secret};
use super::api::{Answer, Context, blocking, checked, internal, known_run};
use super::login::form_fields;
use super::{UiState, Viewer};

/// The routes.
pub fn routes() -> Router<UiState> {
    Router::new()
        .route(
            "/api/runs/{id}/stages/{stage}/approve",
            post(async |s, c, v, p, r| decide(s, c, v, p, r, true).await),
        )
        .route(
            "/api/runs/{id}/stages/{stage}/reject",
            post(async |s, c, v, p, r| decide(s, c, v, p, r, false).await),
        )
}

async fn decide(
    State(state): State<UiState>,
    Extension(context): Extension<Context>,
    viewer: Option<Extension<Viewer>>,
    Path((id, stage)): Path<(String, String)>,
    request: Request,
    approve: bool,
) -> Answer {
    checked("run", &id)?;
    checked("stage", &stage)?;
    let viewer = viewer.map(|Extension(v)| v).unwrap_or_default();
    let Some(by) = viewer.name.clone().filter(|_| viewer.can_act()) else {
        if !context.has_tokens {
            return Err(error(
                StatusCode::FORBIDDEN,
                "approving needs a token, and this dashboard has none: start it with --ui-token-env NAME",
            ));
        }
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "approving needs a token: send Authorization: Bearer <token>, or sign in at /login",
        ));
    };
    if !same_origin(request.headers(), state.public_url.as_deref()) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the request was sent from another site",
        ));
    }
    let form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    // Signed in by cookie, which a browser sends whoever made the page: the form proves it is
    // ours by the session's csrf value. A bearer token is never sent by a browser on its own.
    if let Some(csrf) = &viewer.csrf {
        let header = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let field = if form {
            form_fields(request.into_body())
                .await?
                .into_iter()
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v)
        } else {
            None
        };
        if !header
            .or(field)
            .is_some_and(|given| same_secret(&given, csrf))
        {
            return Err(error(
                StatusCode::FORBIDDEN,
                "the form's csrf value is missing or wrong: reload the page and try again",
            ));
        }
    }
    let engine = state.engine.clone();
    let (run_id, stage_id, approver) = (id.clone(), stage.clone(), by.clone());
    blocking(move || {
        known_run(&engine, &run_id)?;
        let decided = if approve {
            engine.approve(&run_id, &stage_id, &approver)
        } else {
            engine.reject(&run_id, &stage_id, &approver)
        };
        match decided {
            Ok(()) => Ok(()),
            Err(e @ Error::NoPendingApproval { .. }) => {
                Err(error(StatusCode::CONFLICT, e.to_string()))
            }
            Err(e) => Err(internal(gitops_core::ErrorChain(&e))),
        }
    })
    .await?;
    if form {
        let location = format!("{}/runs/{id}", state.public_url.as_deref().unwrap_or(""));
        return Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response());
    }
    Ok(Json(serde_json::json!({
        "run": id,
        "stage": stage,
        "decision": if approve { "approved" } else { "rejected" },
        "by": by,
    }))
    .into_response())
}
