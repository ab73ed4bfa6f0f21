//! Requests in, responses out: the API paths and verbs the fake serves, and the bodies it
//! answers with (whole JSON, `Status` errors, streams for watches and followed logs).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::{FakeBody, FakeCluster, lock};

type Frame = Result<http_body::Frame<Bytes>, Infallible>;

/// A request's path, split.
pub(super) struct Target {
    pub(super) api: String,
    pub(super) plural: String,
    pub(super) namespace: String,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
}

impl Target {
    /// The collection of `plural` in `namespace` of `api`.
    pub(super) fn collection(api: &str, plural: &str, namespace: &str) -> Target {
        Target {
            api: api.to_owned(),
            plural: plural.to_owned(),
            namespace: namespace.to_owned(),
            name: None,
            sub: None,
        }
    }
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let owned = |s: &&str| (*s).to_owned();
    let t = |plural: &str, namespace: &str, name: Option<&&str>, sub: Option<&&str>| Target {
        api: api.clone(),
        plural: plural.to_owned(),
        namespace: namespace.to_owned(),
        name: name.map(owned),
        sub: sub.map(owned),
    };
    Some(match rest {
        ["namespaces"] => t("namespaces", "", None, None),
        ["namespaces", name] => t("namespaces", "", Some(name), None),
        ["namespaces", ns, plural] => t(plural, ns, None, None),
        ["namespaces", ns, plural, name] => t(plural, ns, Some(name), None),
        ["namespaces", ns, plural, name, sub] => t(plural, ns, Some(name), Some(sub)),
        [plural] => t(plural, "", None, None),
        [plural, name] => t(plural, "", Some(name), None),
        [plural, name, sub] => t(plural, "", Some(name), Some(sub)),
        _ => return None,
    })
}

fn query(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A whole JSON response.
pub(super) fn whole(status: u16, body: &Value) -> http::Response<FakeBody> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let stream: Pin<Box<dyn Stream<Item = Frame> + Send>> =
        Box::pin(futures_util::stream::iter([Ok(http_body::Frame::data(
            bytes,
        ))]));
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(stream))
        .unwrap_or_else(|e| panic!("a response: {e}"))
}

/// A `Status` object, as the API server describes a failure.
pub(super) fn status_object(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// A failed request.
pub(super) fn status(code: u16, reason: &str, message: String) -> http::Response<FakeBody> {
    whole(code, &status_object(code, reason, message))
}

pub(super) fn not_found(plural: &str, name: &str) -> http::Response<FakeBody> {
    status(404, "NotFound", format!("{plural} \"{name}\" not found"))
}

/// The kind of the objects of `plural`.
pub(super) fn kind_of(plural: &str) -> String {
    match plural {
        "namespaces" => "Namespace".into(),
        "pods" => "Pod".into(),
        "jobs" => "Job".into(),
        "deployments" => "Deployment".into(),
        "statefulsets" => "StatefulSet".into(),
        "services" => "Service".into(),
        "configmaps" => "ConfigMap".into(),
        "secrets" => "Secret".into(),
        other => {
            let mut s = other.trim_end_matches('s').to_owned();
            if let Some(first) = s.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            s
        }
    }
}

/// The `apiVersion` of objects at `api` (`/apis/apps/v1` → `apps/v1`).
pub(super) fn api_version(api: &str) -> String {
    api.trim_start_matches("/apis/")
        .trim_start_matches("/api/")
        .to_owned()
}

fn parse_body(body: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| format!("the body is neither JSON nor YAML: {e}"))
}

/// One line of a watch stream.
pub(super) fn line(event: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(event).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// A stream fed by `f` through a channel (a task of its own).
pub(super) fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Bytes> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// A streamed response.
pub(super) fn streaming(
    stream: impl Stream<Item = Bytes> + Send + 'static,
) -> http::Response<FakeBody> {
    use futures_util::StreamExt;
    let frames: Pin<Box<dyn Stream<Item = Frame> + Send>> =
        Box::pin(stream.map(|b| Ok(http_body::Frame::data(b))));
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(frames))
        .unwrap_or_else(|e| panic!("a response: {e}"))
}

/// Who makes a request, for `managedFields`: `fieldManager`, else the user agent's product
/// (before the first `/`), as the API server defaults it.
fn manager(q: &BTreeMap<String, String>, headers: &http::HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|p| !p.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

impl FakeCluster {
    /// Serves one request.
    pub(super) async fn handle(
        &self,
        req: http::Request<kube::client::Body>,
    ) -> http::Response<FakeBody> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return status(400, "BadRequest", format!("unreadable body: {e}")),
        };
        let q = query(&parts.uri);
        lock(&self.inner).requests.push(format!(
            "{} {}",
            parts.method,
            parts
                .uri
                .path_and_query()
                .map_or(parts.uri.path(), |p| p.as_str())
        ));
        let Some(target) = parse_path(parts.uri.path()) else {
            return status(404, "NotFound", format!("no API at {}", parts.uri.path()));
        };
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let manager = manager(&q, &parts.headers);
        match (parts.method.as_str(), &target.name, target.sub.as_deref()) {
            ("GET", Some(_), Some("log")) => self.log(&target, &q),
            ("GET", Some(name), _) => {
                match self.get(&target.api, &target.plural, &target.namespace, name) {
                    Some(o) => whole(200, &o),
                    None => not_found(&target.plural, name),
                }
            }
            ("GET", None, _) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(&target, &q)
            }
            ("GET", None, _) => self.list_response(&target, &q),
            ("POST", None, _) => match parse_body(&body) {
                Ok(object) => self.create(&target, object, &manager),
                Err(e) => status(400, "BadRequest", e),
            },
            ("PUT", Some(name), sub) => match parse_body(&body) {
                Ok(object) => self.replace(&target, name, sub, object, &manager),
                Err(e) => status(400, "BadRequest", e),
            },
            ("PATCH", Some(name), sub) => match parse_body(&body) {
                Ok(patch) => self.patch(&target, name, sub, &content_type, &q, patch, &manager),
                Err(e) => status(400, "BadRequest", e),
            },
            ("DELETE", Some(name), None) => self.delete(&target, name, &q, &body),
            (method, _, _) => status(
                405,
                "MethodNotAllowed",
                format!("{method} {} is not served by the fake", parts.uri.path()),
            ),
        }
    }
}
