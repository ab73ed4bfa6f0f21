//! Waiting for an object to reach a state with a watch (list, then watch from the list's resource
//! version; again when the server ends the watch), never by polling in a loop.

use std::fmt::Debug;

use futures_util::StreamExt;
use gitops_core::backend::Cancellation;
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// Why a wait ended without its state.
#[derive(Debug)]
pub(crate) enum WaitError {
    Cancelled,
    TimedOut,
    Api(kube::Error),
}

/// Which objects a wait looks at.
pub(crate) enum Selector<'a> {
    Name(&'a str),
    Labels(&'a str),
}

/// Watches the objects `selector` picks until `check` returns something for one of them (or, for
/// a deletion, `gone` does; or, when the list finds none, `empty` does), `deadline` passes, or
/// `cancel` fires.
pub(crate) async fn until<K, T>(
    api: &Api<K>,
    selector: Selector<'_>,
    deadline: Option<Instant>,
    cancel: &Cancellation,
    mut check: impl FnMut(&K) -> Option<T>,
    mut gone: impl FnMut(&K) -> Option<T>,
    mut empty: impl FnMut() -> Option<T>,
) -> Result<T, WaitError>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let (lp, wp) = match selector {
        Selector::Name(name) => {
            let field = format!("metadata.name={name}");
            (
                ListParams::default().fields(&field),
                WatchParams::default().fields(&field),
            )
        }
        Selector::Labels(labels) => (
            ListParams::default().labels(labels),
            WatchParams::default().labels(labels),
        ),
    };
    loop {
        let list = tokio::select! {
            list = api.list(&lp) => list.map_err(WaitError::Api)?,
            _ = cancel.cancelled() => return Err(WaitError::Cancelled),
        };
        for object in &list.items {
            if let Some(t) = check(object) {
                return Ok(t);
            }
        }
        if list.items.is_empty() {
            if let Some(t) = empty() {
                return Ok(t);
            }
        }
        let version = list.metadata.resource_version.unwrap_or_default();
        let mut wp = wp.clone();
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now()).as_secs();
            wp = wp.timeout(left.clamp(1, 290) as u32);
        }
        let stream = api.watch(&wp, &version).await.map_err(WaitError::Api)?;
        let mut stream = std::pin::pin!(stream);
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                e = stream.next() => e,
                _ = cancel.cancelled() => return Err(WaitError::Cancelled),
                _ = sleep => return Err(WaitError::TimedOut),
            };
            match event {
                // The server ended the watch: list and watch again.
                None => break,
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                    if let Some(t) = check(&o) {
                        return Ok(t);
                    }
                }
                Some(Ok(WatchEvent::Deleted(o))) => {
                    if let Some(t) = gone(&o) {
                        return Ok(t);
                    }
                }
                Some(Ok(WatchEvent::Bookmark(_))) => {}
                // Too old a version (410) and the like: start over from a list, after a breath.
                Some(Ok(WatchEvent::Error(_))) | Some(Err(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    break;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(WaitError::TimedOut);
        }
    }
}

/// Waits until the object `name` no longer exists (a watch for its deletion).
pub(crate) async fn until_gone<K>(
    api: &Api<K>,
    name: &str,
    deadline: Option<Instant>,
    cancel: &Cancellation,
) -> Result<(), WaitError>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    until(
        api,
        Selector::Name(name),
        deadline,
        cancel,
        |_: &K| None,
        |_| Some(()),
        || Some(()),
    )
    .await
}
