//! Where events come from: forge webhooks (GitHub, GitLab), each turned into a [`GitEvent`].
//!
//! [`GitEvent`]: crate::event::GitEvent

pub mod webhook;
