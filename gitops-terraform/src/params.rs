//! What the Terraform backend reads from `with`, declared for config validation: keep in step
//! with `Settings::read` in `backend.rs` (a test below holds the two to the same keys). Stages
//! and deployments take the same keys.

use gitops_core::backend::{ParamKind, ParamSchema};

/// The parameters of a stage, a deployment and a stop.
pub(crate) fn schema() -> ParamSchema {
    ParamSchema::new()
        .with(
            "dir",
            ParamKind::Path,
            "the configuration's directory in the checkout (default .)",
        )
        .with(
            "binary",
            ParamKind::Command,
            "the CLI run: terraform, tofu or a path (default: the backend's)",
        )
        .with(
            "workspace",
            ParamKind::String,
            "the workspace (default: the environment's name, or default)",
        )
        .with(
            "vars",
            ParamKind::Map(ParamSchema::open()),
            "variables, written to a generated *.tfvars.json",
        )
        .with(
            "var_files",
            ParamKind::PathList,
            "more variable files, relative to `dir`",
        )
        .with(
            "backend_config",
            ParamKind::StringMap,
            "-backend-config pairs for init",
        )
        .with(
            "lock_timeout",
            ParamKind::seconds(),
            "seconds to wait for the state lock (default: the backend's)",
        )
        .with(
            "expose_sensitive",
            ParamKind::StringList,
            "sensitive outputs passed on as outputs",
        )
        .with(
            "action",
            ParamKind::one_of(&["plan", "validate"]),
            "what a stage without `run` does (default plan)",
        )
}

#[cfg(test)]
mod tests {
    use gitops_core::config::{Config, LoadOptions};

    fn parse(yaml: &str) -> Result<Config, String> {
        let options = LoadOptions::default()
            .with_run_params("terraform", super::schema())
            .with_deploy_params("terraform", super::schema());
        Config::parse_with(".gitops.yml", yaml, &options).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_the_documented_examples() {
        // README.md and the crate docs.
        parse(
            r#"version: 1
environments:
  staging: { backend: terraform, with: { dir: infra, vars: { size: small }, backend_config: { bucket: tf-state } } }
pipelines:
  pr:
    on: { pull_request: {} }
    stages:
      plan: { backend: terraform, with: { dir: infra, workspace: staging } }
  main:
    on: { push: { branches: [main] } }
    stages:
      apply: { deploy: staging }
"#,
        )
        .unwrap();
        // README.md's "A config" (production), examples/src/bin/terraform-staging.rs and
        // examples/tests/terraform.rs, and every other key.
        parse(
            r#"version: 1
environments:
  preview: { per_pull_request: true, backend: terraform, with: { dir: infra } }
  staging: { backend: terraform, with: { dir: infra, vars: { env: staging, replicas: 2 } } }
  production: { backend: terraform }
pipelines:
  pr:
    on: { pull_request: { types: [opened, synchronize] } }
    stages:
      plan: { backend: terraform, with: { dir: infra, workspace: staging, vars: { env: staging, replicas: 2 } } }
      preview: { needs: plan, deploy: preview, with: { dir: infra, vars: { name: "pr-${{ event.pr.number }}" } } }
      check: { backend: terraform, with: { action: validate, binary: tofu, var_files: [common.tfvars], lock_timeout: 60, expose_sensitive: [token] } }
      cmd: { backend: terraform, run: $GITOPS_TF_BINARY plan $GITOPS_TF_VAR_ARGS }
  release:
    on: { tag: { semver: ">=0.1.0" } }
    stages:
      deploy: { deploy: production, with: { vars: { version: "${{ event.version }}" } } }
"#,
        )
        .unwrap();
    }

    #[test]
    fn refuses_unknown_keys_and_wrong_values() {
        let stage = |with: &str| {
            format!(
                "version: 1\npipelines:\n  pr:\n    on: {{ pull_request: {{}} }}\n    stages:\n      plan: {{ backend: terraform, with: {with} }}\n"
            )
        };
        let err = parse(&stage("{ dir: infra, workspce: x }")).unwrap_err();
        assert!(err.contains("did you mean \"workspace\"?"), "{err}");
        // The README's release once passed `version` directly, which terraform refuses.
        let err = parse(&stage("{ version: \"${{ event.sha }}\" }")).unwrap_err();
        assert!(err.contains("unknown parameter \"version\""), "{err}");
        let err = parse(&stage("{ action: apply }")).unwrap_err();
        assert!(
            err.contains("must be one of plan, validate, found \"apply\""),
            "{err}"
        );
        let err = parse(&stage("{ binary: \"${{ event.pr.head_ref }}\" }")).unwrap_err();
        assert!(err.contains("with.binary: `binary` is a command"), "{err}");
        let err = parse(&stage("{ vars: [a] }")).unwrap_err();
        assert!(err.contains("with.vars: must be a map"), "{err}");
        let err = parse(&stage("{ lock_timeout: 604801 }")).unwrap_err();
        assert!(err.contains("from 0 to 604800"), "{err}");
        let err = parse(&stage("{ dir: /etc }")).unwrap_err();
        assert!(
            err.contains("with.dir: must be a path inside the checkout"),
            "{err}"
        );
    }

    #[test]
    fn the_schema_has_the_keys_the_backend_reads() {
        let schema = super::schema();
        assert_eq!(schema.names(), crate::backend::KEYS);
    }
}
