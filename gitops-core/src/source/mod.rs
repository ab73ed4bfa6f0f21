//! Where events come from: forge webhooks (GitHub, GitLab) and a watcher over a repository's
//! refs, each turned into [`GitEvent`]s.
//!
//! [`GitEvent`]: crate::event::GitEvent

pub mod watch;
pub mod webhook;
