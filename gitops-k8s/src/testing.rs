//! An in-memory Kubernetes API for tests (feature `testing`): [`FakeCluster`] answers kube's
//! client the way an API server does, for the parts this backend and its users touch.
//!
//! It stores any resource as JSON under its API path (create, get, list, replace, server-side
//! apply, which also drops the fields a manager applied before and applies no more, and merge
//! patches, delete), keeps resource versions and generations, serves watches
//! (`?watch=true`, from a resource version, with label and field selectors) as streams, deletes a
//! namespace's objects with it and a Job's pods with the Job, and records every request.
//!
//! Its controllers (on unless [`FakeCluster::without_controllers`]) roll Deployments and
//! StatefulSets out at once (their status says every replica is updated and available), and its
//! kubelet makes a Pod for each Job and runs the
//! Pod's container command as a local process (the image is not pulled: the command runs on this
//! machine, with the container's `env`), streams its output as the Pod's log (`pods/<name>/log`,
//! with `follow`), enforces the Job's `activeDeadlineSeconds`, writes the exit code and the
//! termination message (the file named by the container's `terminationMessagePath`, which the
//! process finds through any env variable whose value is that path) into the Pod's status, and
//! marks the Job complete or failed. Without it, tests set statuses with
//! [`FakeCluster::set_status`]. kube-fake-client (controller-runtime's fake) has no watches, logs
//! or controllers, which the backend's waits need.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

type Frame = Result<http_body::Frame<Bytes>, Infallible>;
/// The body of the fake's responses: whole, or streamed (watches, followed logs).
pub type FakeBody = http_body_util::StreamBody<Pin<Box<dyn Stream<Item = Frame> + Send>>>;

/// Where an object lives: its API (`/api/v1`, `/apis/apps/v1`), resource (plural), namespace
/// (empty for cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    api: String,
    plural: String,
    namespace: String,
    name: String,
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    kind: &'static str,
    key: Key,
    object: Value,
}

#[derive(Default)]
struct PodLog {
    text: String,
    done: bool,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    events: Vec<Event>,
    logs: BTreeMap<(String, String), PodLog>,
    /// Processes the kubelet runs, by pod (namespace, name).
    running: BTreeMap<(String, String), CancellationToken>,
    /// What each field manager last applied to each object (server-side apply's memory).
    applied: BTreeMap<(Key, String), Value>,
    requests: Vec<String>,
    next_id: u64,
}

struct Inner {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
    controllers: bool,
    workdir: tempfile::TempDir,
}

/// An in-memory Kubernetes API (see the module docs).
#[derive(Clone)]
pub struct FakeCluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCluster").finish_non_exhaustive()
    }
}

impl Default for FakeCluster {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, State> {
    inner.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeCluster {
    /// An empty cluster whose kubelet runs Job pods and whose Deployments and StatefulSets roll
    /// out at once.
    pub fn new() -> Self {
        Self::build(true)
    }

    /// An empty cluster where nothing runs and nothing rolls out: tests set statuses themselves.
    pub fn without_controllers() -> Self {
        Self::build(false)
    }

    fn build(controllers: bool) -> Self {
        let workdir = tempfile::Builder::new()
            .prefix("gitops-fake-kubelet-")
            .tempdir()
            .unwrap_or_else(|e| panic!("the fake cluster needs a temporary directory: {e}"));
        FakeCluster {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: tokio::sync::Notify::new(),
                controllers,
                workdir,
            }),
        }
    }

    /// A kube client talking to this cluster (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// The object at `api` (`/api/v1`, `/apis/apps/v1`), `plural`, `namespace` (`""` for
    /// cluster-scoped) and `name`.
    pub fn get(&self, api: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.inner)
            .objects
            .get(&key(api, plural, namespace, name))
            .cloned()
    }

    /// The objects of `plural` in `namespace` (`None`: in every namespace).
    pub fn list(&self, api: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        lock(&self.inner)
            .objects
            .iter()
            .filter(|(k, _)| {
                k.api == api && k.plural == plural && namespace.is_none_or(|n| k.namespace == n)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Replaces an object's `status`, as its controller would (a rollout's progress).
    pub fn set_status(&self, api: &str, plural: &str, namespace: &str, name: &str, status: Value) {
        let k = key(api, plural, namespace, name);
        let mut state = lock(&self.inner);
        let Some(mut object) = state.objects.get(&k).cloned() else {
            panic!("set_status: no {plural} {namespace}/{name}");
        };
        object["status"] = status;
        state.store(k, object, "MODIFIED");
        drop(state);
        self.inner.changed.notify_waiters();
    }

    /// Every request so far, as `METHOD path?query`, in order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.inner).requests.clone()
    }

    /// How many processes the kubelet runs now.
    pub fn running_processes(&self) -> usize {
        lock(&self.inner).running.len()
    }
}

fn key(api: &str, plural: &str, namespace: &str, name: &str) -> Key {
    Key {
        api: api.to_owned(),
        plural: plural.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

impl State {
    /// Stores `object` under `k` with a new resource version, and records the event.
    fn store(&mut self, k: Key, mut object: Value, kind: &'static str) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(k.clone(), object.clone());
        self.events.push(Event {
            rv: self.rv,
            kind,
            key: k,
            object: object.clone(),
        });
        object
    }

    fn remove(&mut self, k: &Key) -> Option<Value> {
        let mut object = self.objects.remove(k)?;
        self.applied.retain(|(key, _), _| key != k);
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.events.push(Event {
            rv: self.rv,
            kind: "DELETED",
            key: k.clone(),
            object: object.clone(),
        });
        if k.plural == "pods" {
            if let Some(token) = self.running.remove(&(k.namespace.clone(), k.name.clone())) {
                token.cancel();
            }
            if let Some(log) = self.logs.get_mut(&(k.namespace.clone(), k.name.clone())) {
                log.done = true;
            }
        }
        Some(object)
    }

    fn uid(&mut self) -> String {
        self.next_id += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_id)
    }
}

/// A request's path, split.
struct Target {
    api: String,
    plural: String,
    namespace: String,
    name: Option<String>,
    sub: Option<String>,
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

/// Whether `object` matches a label selector (`a=b,c!=d,e`) and a field selector
/// (`metadata.name=x`, `metadata.namespace=y`).
fn matches(object: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let label = |k: &str| object["metadata"]["labels"][k].as_str().map(str::to_owned);
    let label_ok = labels
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                label(k).as_deref() != Some(v)
            } else if let Some((k, v)) = term.split_once('=') {
                label(k.trim_end_matches('=')).as_deref() == Some(v)
            } else {
                label(term).is_some()
            }
        });
    let field_ok = fields
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| {
            let Some((k, v)) = term.split_once('=') else {
                return true;
            };
            let k = k.trim_end_matches('=');
            match k {
                "metadata.name" => object["metadata"]["name"].as_str() == Some(v),
                "metadata.namespace" => object["metadata"]["namespace"].as_str() == Some(v),
                _ => true,
            }
        });
    label_ok && field_ok
}

fn whole(status: u16, body: &Value) -> http::Response<FakeBody> {
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

fn status(code: u16, reason: &str, message: String) -> http::Response<FakeBody> {
    whole(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

fn kind_of(plural: &str) -> String {
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

fn api_version(api: &str) -> String {
    api.trim_start_matches("/apis/")
        .trim_start_matches("/api/")
        .to_owned()
}

/// Removes from `target` the map keys `old` has and `new` does not (recursively).
fn drop_unapplied(target: &mut Value, old: &Value, new: &Value) {
    let (Value::Object(t), Value::Object(o)) = (target, old) else {
        return;
    };
    for (k, old_v) in o {
        match new.get(k) {
            None => {
                t.remove(k);
            }
            Some(new_v) => {
                if let Some(t_v) = t.get_mut(k) {
                    drop_unapplied(t_v, old_v, new_v);
                }
            }
        }
    }
}

/// RFC 7386 merge of `patch` into `target` (a `null` removes a key).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl tower::Service<http::Request<kube::client::Body>> for FakeCluster {
    type Response = http::Response<FakeBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let cluster = self.clone();
        Box::pin(async move { Ok(cluster.handle(req).await) })
    }
}

impl FakeCluster {
    async fn handle(&self, req: http::Request<kube::client::Body>) -> http::Response<FakeBody> {
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
                Ok(object) => self.create(&target, object),
                Err(e) => status(400, "BadRequest", e),
            },
            ("PUT", Some(name), sub) => match parse_body(&body) {
                Ok(object) => self.replace(&target, name, sub, object),
                Err(e) => status(400, "BadRequest", e),
            },
            ("PATCH", Some(name), sub) => match parse_body(&body) {
                Ok(patch) => self.patch(&target, name, sub, &content_type, &q, patch),
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

    fn list_response(
        &self,
        target: &Target,
        q: &BTreeMap<String, String>,
    ) -> http::Response<FakeBody> {
        let state = lock(&self.inner);
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|(k, o)| {
                k.api == target.api
                    && k.plural == target.plural
                    && (target.namespace.is_empty() || k.namespace == target.namespace)
                    && matches(
                        o,
                        q.get("labelSelector").map(String::as_str),
                        q.get("fieldSelector").map(String::as_str),
                    )
            })
            .map(|(_, o)| o.clone())
            .collect();
        whole(
            200,
            &json!({"apiVersion": api_version(&target.api),
                    "kind": format!("{}List", kind_of(&target.plural)),
                    "metadata": {"resourceVersion": state.rv.to_string()},
                    "items": items}),
        )
    }

    fn create(&self, target: &Target, mut object: Value) -> http::Response<FakeBody> {
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(422, "Invalid", "metadata.name: Required value".into());
        };
        let k = key(&target.api, &target.plural, &target.namespace, &name);
        let mut state = lock(&self.inner);
        if state.objects.contains_key(&k) {
            return status(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", target.plural),
            );
        }
        let uid = state.uid();
        let meta = &mut object["metadata"];
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        meta["generation"] = json!(1);
        if !target.namespace.is_empty() {
            meta["namespace"] = json!(target.namespace);
        }
        if object.get("apiVersion").is_none() {
            object["apiVersion"] = json!(api_version(&target.api));
        }
        if object.get("kind").is_none() {
            object["kind"] = json!(kind_of(&target.plural));
        }
        if target.plural == "namespaces" {
            object["status"] = json!({"phase": "Active"});
        }
        let stored = state.store(k, object, "ADDED");
        drop(state);
        if target.plural == "jobs" && self.inner.controllers {
            self.start_job(&target.namespace, &stored);
        }
        let stored = self.roll_out(&target.plural, stored);
        self.inner.changed.notify_waiters();
        whole(201, &stored)
    }

    fn replace(
        &self,
        target: &Target,
        name: &str,
        sub: Option<&str>,
        object: Value,
    ) -> http::Response<FakeBody> {
        let k = key(&target.api, &target.plural, &target.namespace, name);
        let mut state = lock(&self.inner);
        let Some(mut current) = state.objects.get(&k).cloned() else {
            return not_found(&target.plural, name);
        };
        if sub == Some("status") {
            current["status"] = object["status"].clone();
        } else {
            let generation = bump_generation(&current, &object);
            let metadata = current["metadata"].clone();
            current = object;
            current["metadata"] = merge_metadata(metadata, &current["metadata"], generation);
        }
        let stored = state.store(k, current, "MODIFIED");
        drop(state);
        self.inner.changed.notify_waiters();
        whole(200, &stored)
    }

    fn patch(
        &self,
        target: &Target,
        name: &str,
        sub: Option<&str>,
        content_type: &str,
        q: &BTreeMap<String, String>,
        patch: Value,
    ) -> http::Response<FakeBody> {
        let apply = content_type.contains("apply-patch");
        if apply && q.get("fieldManager").is_none_or(|m| m.is_empty()) {
            return status(
                400,
                "BadRequest",
                "fieldManager is required for server-side apply".into(),
            );
        }
        let k = key(&target.api, &target.plural, &target.namespace, name);
        let existing = lock(&self.inner).objects.get(&k).cloned();
        let Some(mut current) = existing else {
            if !apply {
                return not_found(&target.plural, name);
            }
            lock(&self.inner)
                .applied
                .insert((k.clone(), q["fieldManager"].clone()), patch.clone());
            let mut created = patch;
            created["metadata"]["managedFields"] = json!([
                {"manager": q["fieldManager"], "operation": "Apply", "apiVersion": api_version(&target.api)}
            ]);
            return self.create(target, created);
        };
        if sub == Some("status") {
            merge(&mut current["status"], &patch["status"]);
        } else {
            let before = current.clone();
            if apply {
                // Fields this manager applied before and applies no more go away.
                let manager = q["fieldManager"].clone();
                let mut state = lock(&self.inner);
                if let Some(old) = state.applied.get(&(k.clone(), manager.clone())) {
                    drop_unapplied(&mut current, old, &patch);
                }
                state.applied.insert((k.clone(), manager), patch.clone());
            }
            merge(&mut current, &patch);
            if current.get("spec") != before.get("spec") {
                let generation = before["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                current["metadata"]["generation"] = json!(generation);
            }
            if apply {
                current["metadata"]["managedFields"] = json!([
                    {"manager": q["fieldManager"], "operation": "Apply", "apiVersion": api_version(&target.api)}
                ]);
            }
        }
        let stored = lock(&self.inner).store(k, current, "MODIFIED");
        let stored = if sub == Some("status") {
            stored
        } else {
            self.roll_out(&target.plural, stored)
        };
        self.inner.changed.notify_waiters();
        whole(200, &stored)
    }

    /// The rollout controller: a Deployment or StatefulSet whose status does not match its
    /// generation gets one that says it rolled out.
    fn roll_out(&self, plural: &str, object: Value) -> Value {
        if !self.inner.controllers || !(plural == "deployments" || plural == "statefulsets") {
            return object;
        }
        let generation = object["metadata"]["generation"].clone();
        if object["status"]["observedGeneration"] == generation {
            return object;
        }
        let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
        let mut rolled = object.clone();
        rolled["status"] = json!({"observedGeneration": generation, "replicas": replicas,
            "updatedReplicas": replicas, "availableReplicas": replicas, "readyReplicas": replicas});
        let k = key(
            &format!(
                "/apis/{}",
                object["apiVersion"].as_str().unwrap_or("apps/v1")
            ),
            plural,
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap_or(""),
        );
        lock(&self.inner).store(k, rolled, "MODIFIED")
    }

    fn delete(
        &self,
        target: &Target,
        name: &str,
        q: &BTreeMap<String, String>,
        body: &Bytes,
    ) -> http::Response<FakeBody> {
        let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let propagation = q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| options["propagationPolicy"].as_str().map(str::to_owned));
        let k = key(&target.api, &target.plural, &target.namespace, name);
        let mut state = lock(&self.inner);
        let Some(removed) = state.remove(&k) else {
            return not_found(&target.plural, name);
        };
        if target.plural == "namespaces" {
            let inside: Vec<Key> = state
                .objects
                .keys()
                .filter(|k| k.namespace == name)
                .cloned()
                .collect();
            for k in inside {
                state.remove(&k);
            }
        }
        if target.plural == "jobs" && propagation.as_deref() != Some("Orphan") {
            let uid = removed["metadata"]["uid"].clone();
            let pods: Vec<Key> = state
                .objects
                .iter()
                .filter(|(k, o)| {
                    k.plural == "pods"
                        && k.namespace == target.namespace
                        && o["metadata"]["labels"]["controller-uid"] == uid
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in pods {
                state.remove(&k);
            }
        }
        drop(state);
        self.inner.changed.notify_waiters();
        whole(200, &removed)
    }

    /// A watch: the matching events after the given resource version (or, from none, every
    /// matching object as ADDED first), then the new ones as they come, until `timeoutSeconds`.
    fn watch(&self, target: &Target, q: &BTreeMap<String, String>) -> http::Response<FakeBody> {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290u64);
        let labels = q.get("labelSelector").cloned();
        let fields = q.get("fieldSelector").cloned();
        let (api, plural, namespace) = (
            target.api.clone(),
            target.plural.clone(),
            target.namespace.clone(),
        );
        let inner = self.inner.clone();
        // A client may ask for any number: no more than a day, as no watch needs longer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout.min(86_400));
        let wanted = move |k: &Key, o: &Value| {
            k.api == api
                && k.plural == plural
                && (namespace.is_empty() || k.namespace == namespace)
                && matches(o, labels.as_deref(), fields.as_deref())
        };
        let stream = async_stream(move |tx| async move {
            let mut cursor = from;
            if from == 0 {
                let (initial, rv) = {
                    let state = lock(&inner);
                    let initial: Vec<Value> = state
                        .objects
                        .iter()
                        .filter(|(k, o)| wanted(k, o))
                        .map(|(_, o)| json!({"type": "ADDED", "object": o}))
                        .collect();
                    (initial, state.rv)
                };
                cursor = rv;
                for e in initial {
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let notified = inner.changed.notified();
                let batch: Vec<Value> = {
                    let state = lock(&inner);
                    let batch = state
                        .events
                        .iter()
                        .filter(|e| e.rv > cursor && wanted(&e.key, &e.object))
                        .map(|e| json!({"type": e.kind, "object": e.object}))
                        .collect();
                    cursor = state.rv;
                    batch
                };
                for e in batch {
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        streaming(stream)
    }

    /// A pod's log; with `follow`, streamed until the pod's process ends.
    fn log(&self, target: &Target, q: &BTreeMap<String, String>) -> http::Response<FakeBody> {
        let name = target.name.clone().unwrap_or_default();
        let id = (target.namespace.clone(), name.clone());
        {
            let state = lock(&self.inner);
            if !state
                .objects
                .contains_key(&key("/api/v1", "pods", &target.namespace, &name))
            {
                return not_found("pods", &name);
            }
        }
        let follow = q.get("follow").is_some_and(|f| f == "true");
        let inner = self.inner.clone();
        let stream = async_stream(move |tx| async move {
            let mut sent = 0;
            loop {
                let notified = inner.changed.notified();
                let (chunk, done) = {
                    let state = lock(&inner);
                    match state.logs.get(&id) {
                        Some(log) => (log.text[sent..].to_owned(), log.done),
                        None => (String::new(), true),
                    }
                };
                sent += chunk.len();
                if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
                if done || !follow {
                    return;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tx.closed() => return,
                }
            }
        });
        streaming(stream)
    }
}

fn not_found(plural: &str, name: &str) -> http::Response<FakeBody> {
    status(404, "NotFound", format!("{plural} \"{name}\" not found"))
}

fn parse_body(body: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| format!("the body is neither JSON nor YAML: {e}"))
}

fn bump_generation(current: &Value, next: &Value) -> i64 {
    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
    if current.get("spec") != next.get("spec") {
        generation + 1
    } else {
        generation
    }
}

fn merge_metadata(mut kept: Value, given: &Value, generation: i64) -> Value {
    for field in ["labels", "annotations"] {
        if let Some(v) = given.get(field) {
            kept[field] = v.clone();
        }
    }
    kept["generation"] = json!(generation);
    kept
}

fn line(event: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(event).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// A stream fed by `f` through a channel (a task of its own).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Bytes> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

fn streaming(stream: impl Stream<Item = Bytes> + Send + 'static) -> http::Response<FakeBody> {
    use futures_util::StreamExt;
    let frames: Pin<Box<dyn Stream<Item = Frame> + Send>> =
        Box::pin(stream.map(|b| Ok(http_body::Frame::data(b))));
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(frames))
        .unwrap_or_else(|e| panic!("a response: {e}"))
}

// The kubelet.
impl FakeCluster {
    /// Makes the Job's Pod and runs its container's command.
    fn start_job(&self, namespace: &str, job: &Value) {
        let job_name = job["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let job_uid = job["metadata"]["uid"].clone();
        let template = &job["spec"]["template"];
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["job-name"] = json!(job_name);
        labels["controller-uid"] = job_uid.clone();
        let pod_name = {
            let mut state = lock(&self.inner);
            state.next_id += 1;
            format!("{job_name}-{:05x}", state.next_id & 0xfffff)
        };
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": namespace, "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                     "uid": job_uid, "controller": true}]},
            "spec": template["spec"].clone(),
            "status": {"phase": "Pending"},
        });
        let target = Target {
            api: "/api/v1".into(),
            plural: "pods".into(),
            namespace: namespace.to_owned(),
            name: None,
            sub: None,
        };
        let _ = self.create(&target, pod.clone());
        let container = template["spec"]["containers"][0].clone();
        let deadline = job["spec"]["activeDeadlineSeconds"].as_u64();
        let cluster = self.clone();
        let namespace = namespace.to_owned();
        let token = CancellationToken::new();
        {
            let mut state = lock(&self.inner);
            state
                .running
                .insert((namespace.clone(), pod_name.clone()), token.clone());
            state
                .logs
                .insert((namespace.clone(), pod_name.clone()), PodLog::default());
        }
        tokio::spawn(async move {
            cluster
                .run_pod(
                    &namespace, &job_name, &pod_name, &container, deadline, token,
                )
                .await;
        });
    }

    async fn run_pod(
        &self,
        namespace: &str,
        job: &str,
        pod: &str,
        container: &Value,
        deadline: Option<u64>,
        token: CancellationToken,
    ) {
        let argv: Vec<String> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(container["args"].as_array().into_iter().flatten())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let message_path = container["terminationMessagePath"]
            .as_str()
            .unwrap_or("/dev/termination-log")
            .to_owned();
        let message_file = self
            .inner
            .workdir
            .path()
            .join(format!("{namespace}-{pod}.msg"));
        let running = json!({"phase": "Running", "containerStatuses": [
            {"name": container["name"], "ready": true, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]});
        self.update_status("/api/v1", "pods", namespace, pod, running);
        let Some((program, args)) = argv.split_first() else {
            self.finish(
                namespace,
                job,
                pod,
                container,
                Err("no command".into()),
                &message_file,
            );
            return;
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(self.inner.workdir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for var in container["env"].as_array().into_iter().flatten() {
            let Some(name) = var["name"].as_str() else {
                continue;
            };
            let value = match (var["value"].as_str(), &var["valueFrom"]["secretKeyRef"]) {
                (Some(value), _) => value.to_owned(),
                (None, reference) if reference.is_object() => {
                    match self.secret_value(namespace, reference) {
                        Ok(value) => value,
                        // As a kubelet does: the container is not created, the pod waits.
                        Err(message) => {
                            let waiting = json!({"phase": "Pending", "containerStatuses": [
                                {"name": container["name"], "ready": false, "state": {"waiting": {
                                    "reason": "CreateContainerConfigError", "message": message}}}]});
                            self.update_status("/api/v1", "pods", namespace, pod, waiting);
                            return;
                        }
                    }
                }
                _ => continue,
            };
            if value == message_path {
                cmd.env(name, &message_file);
            } else {
                cmd.env(name, value);
            }
        }
        let stop = gitops_core::backend::process::StopPolicy::new(
            gitops_core::backend::process::StopSignal::Terminate,
            Duration::from_secs(2),
        );
        let id = (namespace.to_owned(), pod.to_owned());
        let inner = self.inner.clone();
        let run = gitops_core::backend::process::run_streaming(cmd, &token, stop, |_, line| {
            let mut state = lock(&inner);
            if let Some(log) = state.logs.get_mut(&id) {
                log.text.push_str(line);
                log.text.push('\n');
            }
            drop(state);
            inner.changed.notify_waiters();
        });
        let outcome = match deadline {
            Some(secs) => {
                let limit = tokio::time::sleep(Duration::from_secs(secs));
                tokio::pin!(run);
                tokio::select! {
                    exit = &mut run => exit.map_err(|e| e.to_string()),
                    _ = limit => {
                        token.cancel();
                        let _ = run.await;
                        Err("DeadlineExceeded".into())
                    }
                }
            }
            None => run.await.map_err(|e| e.to_string()),
        };
        self.finish(namespace, job, pod, container, outcome, &message_file);
    }

    /// The value a `secretKeyRef` names, decoded, as a kubelet reads it; or why there is none
    /// (its message).
    fn secret_value(&self, namespace: &str, reference: &Value) -> Result<String, String> {
        let (name, key) = (
            reference["name"].as_str().unwrap_or_default(),
            reference["key"].as_str().unwrap_or_default(),
        );
        let secret = self
            .get("/api/v1", "secrets", namespace, name)
            .ok_or_else(|| format!("secret \"{name}\" not found"))?;
        let encoded = secret["data"][key].clone();
        if encoded.is_null() {
            return Err(format!(
                "couldn't find key {key} in Secret {namespace}/{name}"
            ));
        }
        let bytes: k8s_openapi::ByteString = serde_json::from_value(encoded)
            .map_err(|e| format!("Secret {namespace}/{name} key {key}: {e}"))?;
        String::from_utf8(bytes.0).map_err(|e| format!("Secret {namespace}/{name}: {e}"))
    }

    fn update_status(&self, api: &str, plural: &str, namespace: &str, name: &str, status: Value) {
        let k = key(api, plural, namespace, name);
        let mut state = lock(&self.inner);
        if let Some(mut object) = state.objects.get(&k).cloned() {
            object["status"] = status;
            state.store(k, object, "MODIFIED");
        }
        drop(state);
        self.inner.changed.notify_waiters();
    }

    fn finish(
        &self,
        namespace: &str,
        job: &str,
        pod: &str,
        container: &Value,
        outcome: Result<gitops_core::backend::process::Exit, String>,
        message_file: &std::path::Path,
    ) {
        use gitops_core::backend::process::Exit;
        let message = std::fs::read_to_string(message_file).unwrap_or_default();
        let _ = std::fs::remove_file(message_file);
        let deleted = {
            let mut state = lock(&self.inner);
            let id = (namespace.to_owned(), pod.to_owned());
            if let Some(log) = state.logs.get_mut(&id) {
                log.done = true;
            }
            state.running.remove(&id).is_none()
        };
        if deleted {
            // Its pod was deleted (the Job or namespace with it): nothing to report.
            self.inner.changed.notify_waiters();
            return;
        }
        let (code, reason, job_reason) = match &outcome {
            Err(e) if e == "DeadlineExceeded" => {
                (137, "DeadlineExceeded", Some("DeadlineExceeded"))
            }
            Ok(Exit::Code(0)) => (0, "Completed", None),
            Ok(Exit::Code(c)) => (*c, "Error", Some("BackoffLimitExceeded")),
            Ok(Exit::Signal(s)) => (128 + s, "Error", Some("BackoffLimitExceeded")),
            Ok(Exit::Cancelled) => (137, "Error", Some("BackoffLimitExceeded")),
            Err(_) => (128, "ContainerCannotRun", Some("BackoffLimitExceeded")),
        };
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        self.update_status(
            "/api/v1",
            "pods",
            namespace,
            pod,
            json!({"phase": phase, "containerStatuses": [{"name": container["name"], "ready": false,
                "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}}}]}),
        );
        let job_status = match job_reason {
            None => json!({"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True"}]}),
            Some(r) => json!({"failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": r,
                 "message": if r == "DeadlineExceeded" { "Job was active longer than specified deadline" } else { "Job has reached the specified backoff limit" }}]}),
        };
        self.update_status("/apis/batch/v1", "jobs", namespace, job, job_status);
    }
}
