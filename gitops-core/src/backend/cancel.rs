//! [`Cancellation`]: how a backend learns that a stage must stop.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Fires once, when what it was handed to must stop (a stage that timed out, a run that was
/// cancelled). Clones share it: cancelling one cancels all. [`child`](Self::child) makes one that
/// fires with this one, and can also fire alone.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<CancellationToken>);

impl Cancellation {
    /// One that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires it (and its children); nothing happens when it already fired.
    pub fn cancel(&self) {
        self.0.cancel();
    }

    /// Whether it fired.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes when it fires (at once when it already did). Cancel-safe: use it in
    /// `tokio::select!` beside the work it stops.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + '_ {
        self.0.cancelled()
    }

    /// A new one that fires when this one does, or when cancelled itself (which leaves this one
    /// alone).
    pub fn child(&self) -> Cancellation {
        Cancellation(Arc::new(self.0.child_token()))
    }

    /// The token it wraps, for the engine's own waits.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.0
    }

    /// One around `token`.
    pub(crate) fn from_token(token: CancellationToken) -> Self {
        Cancellation(Arc::new(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_it_and_children_follow_their_parent_only() {
        let parent = Cancellation::new();
        let clone = parent.clone();
        let child = parent.child();
        child.cancel();
        assert!(child.is_cancelled());
        assert!(
            !parent.is_cancelled(),
            "a child's cancel leaves its parent alone"
        );

        let other = parent.child();
        clone.cancel();
        assert!(parent.is_cancelled() && other.is_cancelled());
        // Already fired: completes at once.
        parent.cancelled().await;
    }
}
