//! `GET /login` (a form asking for a token), `POST /login` (sets the signed session cookie)
//! and `POST /logout`.

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use super::access::{ApiError, Gate, error, same_origin};

/// The largest form accepted by the login and approval endpoints.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The routes.
pub fn routes() -> Router<Gate> {
    Router::new()
        .route("/login", get(form).post(login))
        .route("/logout", post(logout))
        .layer(middleware::map_response(security_headers))
}

/// What the pages' policy says (see [`super::pages`]), but for the form's one inline style
/// block: no script at all, and no framing by another site.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";

async fn security_headers(mut response: Response) -> Response {
    super::pages::secure(response.headers_mut(), CONTENT_SECURITY_POLICY);
    response
}

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The fields of a form body (`application/x-www-form-urlencoded`), read up to
/// [`MAX_FORM_BYTES`]; `Err` answers the request.
pub async fn form_fields(body: Body) -> Result<Vec<(String, String)>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the form is larger than {MAX_FORM_BYTES} bytes"),
            )
        })?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

/// Where to go after signing in: a path of this server (`/runs/r1`), never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/",
    }
}

fn page(gate: &Gate, next: &str, message: Option<&str>) -> Html<String> {
    let base = escape(gate.public_url.as_deref().unwrap_or(""));
    let body = if gate.access.has_tokens() {
        format!(
            r#"<form method="post" action="{base}/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form>"#,
            next = escape(next)
        )
    } else {
        "<p>This dashboard has no tokens, so no one can sign in: it answers loopback peers only. \
         Start it with <code>--ui-token-env NAME</code> (a variable holding a token) to let \
         others in.</p>"
            .to_owned()
    };
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · gitops</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 24rem; margin: 4rem auto; padding: 0 1rem; }}
label, input, button {{ display: block; width: 100%; box-sizing: border-box; margin: .4rem 0; }}
input, button {{ font-size: 1rem; padding: .5rem; }}
.error {{ color: #b00020; }}
</style></head>
<body><h1>gitops</h1>{message}{body}</body></html>
"#
    ))
}

fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn form(State(gate): State<Gate>, RawQuery(query): RawQuery) -> Html<String> {
    let next = query_value(query.as_deref(), "next");
    page(&gate, safe_next(next.as_deref()), None)
}

fn redirect(gate: &Gate, path: &str, cookie: Option<String>) -> Response {
    let location = format!("{}{path}", gate.public_url.as_deref().unwrap_or(""));
    let mut headers = HeaderMap::new();
    if let Ok(location) = location.parse() {
        headers.insert(header::LOCATION, location);
    }
    if let Some(cookie) = cookie.and_then(|c| c.parse().ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    (StatusCode::SEE_OTHER, headers).into_response()
}

async fn login(State(gate): State<Gate>, request: Request) -> Response {
    if !same_origin(request.headers(), gate.public_url.as_deref()) {
        return error(StatusCode::FORBIDDEN, "the form was sent from another site").into_response();
    }
    let fields = match form_fields(request.into_body()).await {
        Ok(fields) => fields,
        Err(e) => return e.into_response(),
    };
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let next = safe_next(field("next")).to_owned();
    let name = field("token").and_then(|t| gate.access.token_name(t));
    match name.and_then(|n| gate.access.login_cookie(n)) {
        Some(cookie) => redirect(&gate, &next, Some(cookie)),
        None => {
            if !gate.access.failed_attempt().await {
                return error(StatusCode::TOO_MANY_REQUESTS, "too many failed attempts")
                    .into_response();
            }
            let mut response = page(&gate, &next, Some("Sign-in failed.")).into_response();
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

async fn logout(State(gate): State<Gate>, headers: HeaderMap) -> Response {
    if !same_origin(&headers, gate.public_url.as_deref()) {
        return error(StatusCode::FORBIDDEN, "the form was sent from another site").into_response();
    }
    redirect(&gate, "/login", Some(gate.access.logout_cookie()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_login_only_paths_of_this_server() {
        assert_eq!(safe_next(Some("/runs/r1?x=1")), "/runs/r1?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "/a\nb",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
