//! Who may see the dashboard and the API, decided once for every request: a valid token
//! (`Authorization: Bearer`, or the login form's signed cookie) names the viewer; without one,
//! only peers of the anonymous networks (loopback by default) may read; the others get 401 (a
//! page: a redirect to `/login`), or 403 when no token is configured at all.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::Viewer;

/// The login cookie's name.
pub const SESSION_COOKIE: &str = "gitops_session";
/// How long a login lasts.
pub const SESSION_SECS: u64 = 12 * 3600;
/// How long a failed login (or a wrong bearer token) waits before it is answered.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Failed logins waiting out [`FAILURE_DELAY`] at once; past it, 429 at once.
pub const MAX_FAILURES_AT_ONCE: usize = 4;
/// Tokens shorter than this draw a warning at start.
pub const SHORT_TOKEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// A token a viewer may present (`--ui-token-env NAME`): its name and what verifies it; the
/// value itself is not kept, and `Debug` shows the name only.
#[derive(Clone)]
struct Token {
    name: String,
    digest: [u8; 32],
    /// Signs this token's sessions: a token changed on the server ends them.
    key: [u8; 32],
}

/// A network in CIDR notation (`127.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// `ADDR/PREFIX`, or an address alone (the whole address).
    pub fn parse(s: &str) -> Result<Net, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("\"{s}\" is not an address or network (10.0.0.0/8, ::1)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be 0 to {max}"))?,
        };
        Ok(Net { addr, prefix })
    }

    /// Whether `ip` is in it (an IPv4 address mapped into IPv6 counts as the IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The default anonymous networks: loopback.
pub fn loopback() -> Vec<Net> {
    vec![
        Net {
            addr: IpAddr::from([127, 0, 0, 0]),
            prefix: 8,
        },
        Net {
            addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ]
}

/// The access rules of the dashboard and the API. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    tokens: Arc<Vec<Token>>,
    anonymous: Arc<Vec<Net>>,
    secure_cookie: bool,
    failures: Arc<Semaphore>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            tokens: Arc::default(),
            anonymous: Arc::new(loopback()),
            secure_cookie: false,
            failures: Arc::new(Semaphore::new(MAX_FAILURES_AT_ONCE)),
        }
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field(
                "tokens",
                &self.tokens.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
        mac.update(b"\0");
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Access {
    /// A token named `name` (the viewer's name, recorded as the approver) with `value`.
    pub fn with_token(mut self, name: &str, value: &str) -> Result<Access, String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "error: --ui-token-env {name}: a token's name is letters, digits, '_' and '-'"
            ));
        }
        if value.is_empty() {
            return Err(format!(
                "error: --ui-token-env {name}: the variable is empty"
            ));
        }
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(format!("error: --ui-token-env {name}: given twice"));
        }
        let token = Token {
            name: name.to_owned(),
            digest: Sha256::digest(value.as_bytes()).into(),
            key: hmac(value.as_bytes(), &[b"gitops ui session key"]),
        };
        Arc::make_mut(&mut self.tokens).push(token);
        Ok(self)
    }

    /// Peers that may read without a token (default: loopback); none when empty.
    pub fn with_anonymous(mut self, nets: Vec<Net>) -> Access {
        self.anonymous = Arc::new(nets);
        self
    }

    /// Whether the login cookie is marked `Secure` (the public URL is https).
    pub fn with_secure_cookie(mut self, secure: bool) -> Access {
        self.secure_cookie = secure;
        self
    }

    /// Whether any token is configured.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether `peer` may read without a token.
    pub fn is_anonymous(&self, peer: IpAddr) -> bool {
        self.anonymous.iter().any(|n| n.contains(peer))
    }

    /// The name of the token whose value is `value`; every token is compared, in constant
    /// time.
    pub fn token_name(&self, value: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let mut found = None;
        for token in self.tokens.iter() {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(token.name.as_str());
            }
        }
        found
    }

    /// The cookie value of a session of token `name`, valid until `expiry` (Unix seconds).
    fn session(&self, name: &str, expiry: u64) -> Option<String> {
        let token = self.tokens.iter().find(|t| t.name == name)?;
        let expiry = expiry.to_string();
        let mac = hmac(
            &token.key,
            &[b"session", name.as_bytes(), expiry.as_bytes()],
        );
        Some(format!("{name}.{expiry}.{}", hex(&mac)))
    }

    /// The `Set-Cookie` value of a new session of token `name`.
    pub fn login_cookie(&self, name: &str) -> Option<String> {
        let value = self.session(name, unix_now() + SESSION_SECS)?;
        Some(format!(
            "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}{}",
            if self.secure_cookie { "; Secure" } else { "" }
        ))
    }

    /// The `Set-Cookie` value that ends a session.
    pub fn logout_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
            if self.secure_cookie { "; Secure" } else { "" }
        )
    }

    /// The viewer of a session cookie value, if it is valid and not expired.
    fn viewer_of_session(&self, value: &str) -> Option<Viewer> {
        let mut parts = value.splitn(3, '.');
        let (name, expiry, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let token = self.tokens.iter().find(|t| t.name == name)?;
        let expiry_secs: u64 = expiry.parse().ok()?;
        if expiry_secs <= unix_now() || expiry != expiry_secs.to_string() {
            return None;
        }
        let given = unhex(mac)?;
        let mut verify = HmacSha256::new_from_slice(&token.key).ok()?;
        for part in [&b"session"[..], name.as_bytes(), expiry.as_bytes()] {
            verify.update(part);
            verify.update(b"\0");
        }
        verify.verify_slice(&given).ok()?;
        let csrf = hex(&hmac(&token.key, &[b"csrf", value.as_bytes()]));
        Some(Viewer {
            name: Some(token.name.clone()),
            csrf: Some(csrf),
            until: Some(expiry_secs),
        })
    }

    /// Waits out a failed attempt ([`FAILURE_DELAY`]); false, at once, when too many wait
    /// already (answer 429).
    pub async fn failed_attempt(&self) -> bool {
        match self.failures.try_acquire() {
            Ok(_permit) => {
                tokio::time::sleep(FAILURE_DELAY).await;
                true
            }
            Err(_) => false,
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The token of an `Authorization: Bearer` header; `Some("")` for a malformed one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?;
    let value = value.to_str().unwrap_or_default();
    Some(match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    })
}

/// Whether two strings are equal, compared in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// An error answer: `{"error": message}` with its status; a 401 asks for a bearer token
/// (`WWW-Authenticate`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"gitops\""),
            );
        }
        response
    }
}

/// An error answer of `status` saying `message`.
pub fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

fn unauthorized(message: &str) -> Response {
    error(StatusCode::UNAUTHORIZED, message).into_response()
}

/// Whether the request is a browser's asking for a page.
fn wants_page(request: &Request) -> bool {
    request.method() == Method::GET
        && !request.uri().path().starts_with("/api/")
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

/// What [`check`] needs: the rules, and where links point.
#[derive(Clone)]
pub struct Gate {
    /// The rules.
    pub access: Access,
    /// `--public-url`, without a trailing slash.
    pub public_url: Option<String>,
}

/// The access layer: puts the request's [`Viewer`] in its extensions, or answers it.
pub async fn check(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let Some(&ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        // Served without a peer address: who is asking cannot be told.
        return error(
            StatusCode::FORBIDDEN,
            "the dashboard cannot tell who is asking: the server did not record the peer's address",
        )
        .into_response();
    };
    let access = &gate.access;
    let path = request.uri().path();
    let login = path == "/login" || path == "/logout";
    let viewer = match bearer(request.headers()) {
        Some(value) => match access.token_name(value) {
            Some(name) => Some(Viewer {
                name: Some(name.to_owned()),
                csrf: None,
                until: None,
            }),
            None if !access.has_tokens() => {
                return error(
                    StatusCode::FORBIDDEN,
                    "this dashboard has no tokens: start it with --ui-token-env NAME to accept Authorization: Bearer",
                )
                .into_response();
            }
            None => {
                if !access.failed_attempt().await {
                    return error(StatusCode::TOO_MANY_REQUESTS, "too many failed attempts")
                        .into_response();
                }
                return unauthorized("the bearer token is not valid");
            }
        },
        None => cookie(request.headers(), SESSION_COOKIE).and_then(|v| access.viewer_of_session(v)),
    };
    // A proxy (one on loopback, say, in front of --public-url) connects for everyone it
    // forwards: its address is not the viewer's.
    let proxied = forwarded(request.headers());
    let anonymous = access.is_anonymous(peer.ip()) && !proxied;
    if viewer.is_none() && anonymous && !local_host(request.headers(), gate.public_url.as_deref()) {
        // A page of another site whose name was made to resolve to this address (DNS
        // rebinding) would be let in as a loopback peer: it sends its own name as Host.
        return error(
            StatusCode::FORBIDDEN,
            "the Host header names another site: reach the dashboard by its address, localhost, or the host of --public-url",
        )
        .into_response();
    }
    let viewer = match viewer {
        Some(viewer) => viewer,
        None if login || anonymous => Viewer::default(),
        None if !access.has_tokens() && proxied => {
            return error(
                StatusCode::FORBIDDEN,
                "the request came through a proxy (Forwarded, X-Forwarded-For or X-Real-IP), which does not make its sender a loopback peer; to let others in, start the dashboard with --ui-token-env NAME",
            )
            .into_response();
        }
        None if !access.has_tokens() => {
            return error(
                StatusCode::FORBIDDEN,
                "the dashboard answers loopback peers only; to let others in, start it with --ui-token-env NAME (a variable holding a token they then send as Authorization: Bearer, or enter at /login)",
            )
            .into_response();
        }
        None if wants_page(&request) => {
            let next = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let base = gate.public_url.as_deref().unwrap_or("");
            let location = format!(
                "{base}/login?next={}",
                form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            );
            return (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
        }
        None => {
            return unauthorized(
                "a token is needed: send Authorization: Bearer <token>, or sign in at /login",
            );
        }
    };
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

/// Whether a proxy says it forwarded the request (for someone else than its own address).
fn forwarded(headers: &HeaderMap) -> bool {
    [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
    ]
    .iter()
    .any(|name| headers.contains_key(*name))
}

/// Whether the request's `Host` is an address, `localhost`, or the public URL's host: a name
/// this server answers to for anonymous peers.
fn local_host(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host: no page of another site sends that.
        return headers.get(header::HOST).is_none();
    };
    let public_host = public_url
        .and_then(|u| u.split_once("://"))
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest));
    if public_host.is_some_and(|p| p.eq_ignore_ascii_case(host)) {
        return true;
    }
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

/// Whether the request's `Origin`, when it has one, is this server's: the host it was sent to,
/// or the public URL's origin. A request without `Origin` (not from a browser's page) passes.
pub fn same_origin(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if let Some(public) = public_url {
        let public_origin = match public.find("://") {
            Some(i) => match public[i + 3..].find('/') {
                Some(j) => &public[..i + 3 + j],
                None => public,
            },
            None => public,
        };
        if origin.eq_ignore_ascii_case(public_origin) {
            return true;
        }
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.split_once("://"), host) {
        (Some((scheme, authority)), Some(host)) => {
            (scheme == "http" || scheme == "https") && authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_what_their_prefix_says() {
        let lo = loopback();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(lo.iter().any(|n| n.contains(ip("127.0.0.2"))));
        assert!(lo.iter().any(|n| n.contains(ip("::1"))));
        assert!(lo.iter().any(|n| n.contains(ip("::ffff:127.0.0.1"))));
        assert!(!lo.iter().any(|n| n.contains(ip("10.0.0.1"))));
        let one = Net::parse("127.0.0.1/32").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Net::parse("10.0.0.0/33").is_err());
        assert!(Net::parse("nonsense").is_err());
    }

    #[test]
    fn sessions_verify_with_their_token_only_and_expire() {
        let access = Access::default()
            .with_token("alice", "a-long-token-value-1")
            .unwrap()
            .with_token("bob", "a-long-token-value-2")
            .unwrap();
        let good = access.session("alice", unix_now() + 60).unwrap();
        let viewer = access.viewer_of_session(&good).unwrap();
        assert_eq!(viewer.name.as_deref(), Some("alice"));
        assert!(viewer.csrf.is_some());
        // Another name, a changed expiry, an expired one: refused.
        assert!(
            access
                .viewer_of_session(&good.replacen("alice", "bob", 1))
                .is_none()
        );
        let (_, rest) = good.split_once('.').unwrap();
        let (_, mac) = rest.split_once('.').unwrap();
        let later = format!("alice.{}.{mac}", unix_now() + 3600);
        assert!(access.viewer_of_session(&later).is_none());
        let old = access.session("alice", unix_now() - 1).unwrap();
        assert!(access.viewer_of_session(&old).is_none());
        for junk in ["", "alice", "alice.1.", "alice.x.zz", "é.é.é"] {
            assert!(access.viewer_of_session(junk).is_none(), "{junk}");
        }
        // The same session under a changed token is no longer valid.
        let changed = Access::default()
            .with_token("alice", "another-token-value")
            .unwrap();
        assert!(changed.viewer_of_session(&good).is_none());
        assert_eq!(access.token_name("a-long-token-value-2"), Some("bob"));
        assert_eq!(access.token_name("a-long-token-value"), None);
        assert!(!format!("{access:?}").contains("token-value"));
    }

    #[test]
    fn anonymous_peers_must_name_this_host_by_address() {
        let host = |h: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, h.parse().unwrap());
            headers
        };
        for ok in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "10.1.2.3"] {
            assert!(local_host(&host(ok), None), "{ok}");
        }
        assert!(!local_host(&host("evil.example:8080"), None));
        assert!(!local_host(&host("127.0.0.1.evil.example"), None));
        let public = Some("https://ci.example.com/gitops");
        assert!(local_host(&host("ci.example.com"), public));
        assert!(local_host(&HeaderMap::new(), None));
    }

    #[test]
    fn origins_must_be_this_server() {
        let headers = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
            if let Some(o) = origin {
                h.insert(header::ORIGIN, o.parse().unwrap());
            }
            h
        };
        assert!(same_origin(&headers(None), None));
        assert!(same_origin(&headers(Some("http://127.0.0.1:8080")), None));
        assert!(!same_origin(&headers(Some("http://evil.example")), None));
        assert!(!same_origin(&headers(Some("null")), None));
        let public = Some("https://ci.example.com/gitops");
        assert!(same_origin(
            &headers(Some("https://ci.example.com")),
            public
        ));
        assert!(!same_origin(
            &headers(Some("https://ci.example.com.evil")),
            public
        ));
    }
}
