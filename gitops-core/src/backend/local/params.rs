//! What the local backend reads from `with`, declared for config validation: keep in step with
//! `deploy.rs`, which reads these keys.

use crate::backend::{ParamKind, ParamSchema};

/// A `run` stage: the command is its `run`, so `with` takes nothing.
pub(super) fn run() -> ParamSchema {
    ParamSchema::new()
}

/// A deploy (or stop) to an environment directory.
pub(super) fn deploy() -> ParamSchema {
    ParamSchema::new()
        .with(
            "files",
            ParamKind::PathOrList,
            "what of the checkout goes into the release (default: all of it)",
        )
        .with(
            "build",
            ParamKind::Command,
            "a shell command run in the new release directory before it goes live",
        )
        .with(
            "serve",
            ParamKind::Command,
            "a shell command started in the release directory that serves it on $PORT",
        )
        .with(
            "port",
            ParamKind::port(),
            "the loopback port `serve` listens on (default: a free one)",
        )
        .with(
            "ready_timeout",
            ParamKind::seconds(),
            "seconds for the port to accept connections after `serve` starts (default 10)",
        )
}

#[cfg(test)]
mod tests {
    /// A context made in code, which no config validation saw.
    #[tokio::test]
    async fn deploy_refuses_a_command_holding_a_template() {
        use std::sync::Arc;

        use crate::backend::local::LocalBackend;
        use crate::backend::{
            BackendError, Deployer, EnvironmentTarget, Executor, RunInfo, StageContext,
        };
        use crate::event::GitEvent;

        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalBackend::builder()
            .with_environments_dir(tmp.path().join("envs"))
            .build();
        let event = GitEvent::push("o/r", "main", None, "abc");
        let run = Arc::new(RunInfo::new("r", "p", event, tmp.path()));
        for key in ["build", "serve"] {
            let ctx = StageContext::new(run.clone(), "d")
                .with_environment(EnvironmentTarget::new("web", "web", None))
                .with_param(key, serde_json::json!("touch ${{ event.pr.title }}"));
            let err = Deployer::deploy(&backend, ctx).await.unwrap_err();
            assert!(
                matches!(&err, BackendError::InvalidParameters(m) if m.starts_with(&format!("`with.{key}` is a command"))),
                "{err}"
            );
        }
        assert!(!tmp.path().join("envs").exists(), "nothing was deployed");
        assert_eq!(Executor::params(&backend), super::run());
        assert_eq!(Deployer::params(&backend), super::deploy());
    }
}
