//! An in-memory Kubernetes API for tests (feature `testing`): [`FakeCluster`] answers kube's
//! client the way an API server does, for the parts this backend and its users touch. Each part
//! is pinned by tests of the fake itself (`tests/fake_api/`), so that where it differs from a
//! real API server, a test of the fake shows it, not a user.
//!
//! - **Storage** (`store`): any resource, stored as JSON under its API path, with resource
//!   versions, generations (one more when anything but `metadata` and `status` changes) and
//!   uids; `create` into a namespace that does not exist is `404`, into one being deleted `403`;
//!   a write with a stale `resourceVersion` is `409`; a write to the main resource leaves the
//!   status alone.
//! - **Server-side apply** (`apply`): `managedFields` kept per manager and operation, conflicts
//!   (`409`, naming fields and managers) unless `force=true`, shared ownership of equal values,
//!   and removal of what an applier no longer applies; merge and strategic merge patches.
//! - **Watches** (`watch`): from a resource version, with label and field selectors, until
//!   `timeoutSeconds`; a version older than the last [`DEFAULT_HISTORY`] changes (or than
//!   [`FakeCluster::compact`]) is answered with a `410 Expired` `ERROR` event.
//! - **Deletion** (`deletion`): namespaces terminate with what they hold; `Background`,
//!   `Foreground` and `Orphan` propagation by `ownerReferences` (a Job orphans its pods by
//!   default, as `batch/v1` does); graceful deletion of running pods; finalizers.
//! - **Controllers** (on unless [`FakeCluster::without_controllers`]): Deployments and
//!   StatefulSets roll out at once, or after `minReadySeconds` (`rollout`); the Job controller
//!   makes pods and sets Job conditions as Kubernetes 1.31+ does (`jobs`); a kubelet runs Job
//!   pods' commands as local processes (`kubelet`). Without them, tests set statuses with
//!   [`FakeCluster::set_status`].
//!
//! Not modelled: admission and validation beyond the above, ReplicaSets and pods of
//! Deployments, Services' endpoints, `ttlSecondsAfterFinished`, watch bookmarks, JSON patches
//! (refused with `415`), the Job controller's back-off delays between retries. kube-fake-client
//! (controller-runtime's fake) has no watches, logs or controllers, which the backend's waits
//! need.

mod apply;
mod deletion;
mod jobs;
mod kubelet;
mod objects;
mod rollout;
mod routes;
mod store;
mod watch;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;

pub use store::DEFAULT_HISTORY;
use store::{State, key};

/// The body of the fake's responses: whole, or streamed (watches, followed logs).
pub type FakeBody = http_body_util::StreamBody<
    Pin<Box<dyn Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> + Send>>,
>;

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
    /// out.
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

    /// Keeps at most `events` changes for watches to resume from (default
    /// [`DEFAULT_HISTORY`]); a watch from an older version gets `410 Expired`.
    pub fn with_history(self, events: usize) -> Self {
        lock(&self.inner).set_history(events);
        self
    }

    /// Forgets every change so far, as etcd's compaction does: a watch from any version before
    /// now gets `410 Expired`.
    pub fn compact(&self) {
        lock(&self.inner).compact();
    }

    /// The current resource version (of the last change).
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner).rv
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

    /// Every object in `namespace`, as `<plural>/<name>`, sorted.
    pub fn namespace_contents(&self, namespace: &str) -> Vec<String> {
        lock(&self.inner)
            .objects
            .keys()
            .filter(|k| k.namespace == namespace)
            .map(|k| format!("{}/{}", k.plural, k.name))
            .collect()
    }

    /// Replaces an object's `status`, as its controller would (a rollout's progress).
    pub fn set_status(&self, api: &str, plural: &str, namespace: &str, name: &str, status: Value) {
        if self.get(api, plural, namespace, name).is_none() {
            panic!("set_status: no {plural} {namespace}/{name}");
        }
        self.update_status(api, plural, namespace, name, status);
    }

    /// Every request so far, as `METHOD path?query`, in order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.inner).requests.clone()
    }

    /// How many processes the kubelet runs now.
    pub fn running_processes(&self) -> usize {
        lock(&self.inner).running.len()
    }

    /// Waits until `done` holds of the state (checked again at every change).
    async fn until(&self, done: impl Fn(&State) -> bool) {
        loop {
            let notified = self.inner.changed.notified();
            if done(&lock(&self.inner)) {
                return;
            }
            notified.await;
        }
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
