//! What the local backend reads from `with`, declared for config validation: keep in step with
//! `deploy.rs`, which reads these keys.

use crate::config::params::{ParamKind, ParamSchema};

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
    use crate::config::{Config, LoadOptions};

    fn options() -> LoadOptions {
        LoadOptions::default()
            .with_run_params("local", super::run())
            .with_deploy_params("local", super::deploy())
    }

    fn parse(yaml: &str) -> Result<Config, String> {
        Config::parse_with(".gitops.yml", yaml, &options()).map_err(|e| e.to_string())
    }

    /// The config of `gitops demo` (examples/src/bin/gitops/demo.rs) and the README's keys.
    #[test]
    fn accepts_the_documented_examples() {
        let yaml = r#"version: 1
environments:
  preview: { per_pull_request: true }
  staging: { with: { files: app.txt, ready_timeout: 30 } }
pipelines:
  pr:
    on: { pull_request: {} }
    stages:
      build: { run: ./build.sh }
      preview: { needs: build, deploy: preview, with: { files: [app.txt] } }
  main:
    on: { push: { branches: [main] } }
    stages:
      deploy:
        deploy: staging
        with: { files: [site, app.txt], build: 'echo "building $GITOPS_PR_TITLE"', serve: "python3 -m http.server $PORT", port: 8080 }
  closed:
    on: { pull_request: { types: [closed] } }
    stages:
      teardown: { stop: preview }
"#;
        parse(yaml).unwrap();
    }

    #[test]
    fn refuses_unknown_keys_and_templates_in_commands() {
        let base = "version: 1\nenvironments:\n  web: {}\npipelines:\n  ci:\n    on: { push: {} }\n    stages:\n      d: { deploy: web, with: WITH }\n";
        let err = parse(&base.replace("WITH", "{ sevre: x }")).unwrap_err();
        assert!(err.contains("did you mean \"serve\"?"), "{err}");
        let err =
            parse(&base.replace("WITH", "{ build: \"echo ${{ event.pr.title }}\" }")).unwrap_err();
        assert!(
            err.starts_with(
                ".gitops.yml:8:40: pipelines.ci.stages.d.with.build: `build` is a command"
            ),
            "{err}"
        );
        let err = parse(&base.replace("WITH", "{ serve: \"x ${{ event.sha }}\" }")).unwrap_err();
        assert!(err.contains("with.serve: `serve` is a command"), "{err}");
        let err = parse(&base.replace("WITH", "{ port: 0 }")).unwrap_err();
        assert!(
            err.contains("must be a whole number from 1 to 65535, found 0"),
            "{err}"
        );
        let err = parse(&base.replace("WITH", "{ files: [../etc] }")).unwrap_err();
        assert!(
            err.contains("with.files[0]: must be a path inside the checkout"),
            "{err}"
        );
        // A run stage on the local backend takes no `with` at all.
        let run = "version: 1\npipelines:\n  ci:\n    on: { push: {} }\n    stages:\n      t: { run: make, with: { image: x } }\n";
        let err = parse(run).unwrap_err();
        assert!(
            err.contains(
                "unknown parameter \"image\": backend \"local\" takes no `with` parameters here"
            ),
            "{err}"
        );
    }

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
