//! What the Kubernetes backend reads from `with`, declared for config validation: keep in step
//! with `job.rs`, `deploy.rs` and `names.rs`, which read these keys.

use gitops_core::backend::{ParamKind, ParamSchema};

/// A stage: a Job.
pub(crate) fn executor() -> ParamSchema {
    ParamSchema::new()
        .with(
            "image",
            ParamKind::String,
            "the image of the Job's container",
        )
        .with(
            "command",
            ParamKind::CommandArgs,
            "the container's command as argv (default: the stage's `run` with sh -c)",
        )
        .with(
            "env",
            ParamKind::StringMap,
            "more environment variables of the container",
        )
        .with(
            "namespace",
            ParamKind::String,
            "the Job's namespace (default: its environment's, else its pipeline's)",
        )
}

/// A deployment (and a stop): manifests applied to a namespace.
pub(crate) fn deployer() -> ParamSchema {
    ParamSchema::new()
        .with(
            "manifests",
            ParamKind::PathOrList,
            "files of the checkout holding the objects to apply",
        )
        .with(
            "image",
            ParamKind::String,
            "the image set on every container whose image has its repository",
        )
        .with(
            "namespace",
            ParamKind::String,
            "the namespace (default gitops-<environment>)",
        )
        .with(
            "service",
            ParamKind::String,
            "the Service whose address is the `url` output (default the first)",
        )
        .with(
            "rollout_timeout",
            ParamKind::seconds(),
            "seconds to wait for Deployments and StatefulSets (default: the backend's)",
        )
}

#[cfg(test)]
mod tests {
    use gitops_core::config::{Config, LoadOptions};

    fn parse(yaml: &str) -> Result<Config, String> {
        let options = LoadOptions::default()
            .with_run_params("k8s", super::executor())
            .with_deploy_params("k8s", super::deployer());
        Config::parse_with(".gitops.yml", yaml, &options).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_the_documented_examples() {
        // README.md's "Kubernetes", examples/src/bin/k8s-release.rs, deploy.rs's module docs.
        parse(
            r#"version: 1
environments:
  production: { backend: k8s, with: { manifests: [k8s/app.yaml], service: web } }
  staging: { backend: k8s, with: { manifests: [deploy/app.yaml, deploy/service.yaml], service: web } }
pipelines:
  release:
    on: { tag: { semver: ">=1.0.0" } }
    stages:
      deploy: { deploy: production, with: { image: "registry.example/web:${{ event.version }}" } }
      smoke:  { needs: deploy, backend: k8s, run: 'wget -q -O- "$URL"', env: { URL: "${{ stages.deploy.outputs.url }}" },
                with: { image: busybox:1.36, namespace: "${{ stages.deploy.outputs.namespace }}" } }
  main:
    on: { push: { branches: [main] } }
    stages:
      deploy: { deploy: staging, with: { image: "registry.example/app:${{ event.sha }}", manifests: k8s/all.yaml, namespace: apps, rollout_timeout: 600 } }
      job: { backend: k8s, with: { image: busybox, command: [sh, -c, "echo $GITOPS_SHA"], env: { A: "${{ event.sha }}" } } }
      plain: { backend: k8s, run: "true", with: { image: busybox } }
"#,
        )
        .unwrap();
    }

    #[test]
    fn refuses_unknown_keys_and_templates_in_commands() {
        let stage = |with: &str| {
            format!(
                "version: 1\nenvironments:\n  prod: {{ backend: k8s }}\npipelines:\n  p:\n    on: {{ push: {{}} }}\n    stages:\n      s: {with}\n"
            )
        };
        let err = parse(&stage(
            "{ backend: k8s, with: { image: busybox, command: [sh, -c, \"echo ${{ event.branch }}\"] } }",
        ))
        .unwrap_err();
        assert!(
            err.contains("pipelines.p.stages.s.with.command[2]: `command` is a command"),
            "{err}"
        );
        let err = parse(&stage("{ backend: k8s, with: { imag: busybox } }")).unwrap_err();
        assert!(err.contains("did you mean \"image\"?"), "{err}");
        let err = parse(&stage("{ deploy: prod, with: { manifest: [a.yaml] } }")).unwrap_err();
        assert!(err.contains("did you mean \"manifests\"?"), "{err}");
        let err = parse(&stage(
            "{ deploy: prod, with: { manifests: [../../etc/x.yaml] } }",
        ))
        .unwrap_err();
        assert!(
            err.contains("with.manifests[0]: must be a path inside the checkout"),
            "{err}"
        );
        let err = parse(&stage("{ deploy: prod, with: { rollout_timeout: 1w } }")).unwrap_err();
        assert!(
            err.contains("with.rollout_timeout: must be a whole number"),
            "{err}"
        );
        // A deploy takes no `command`: that is a Job's.
        let err = parse(&stage("{ deploy: prod, with: { command: [sh] } }")).unwrap_err();
        assert!(err.contains("unknown parameter \"command\""), "{err}");
    }

    #[test]
    fn the_lazy_backend_declares_them_before_it_connects() {
        use gitops_core::backend::{Deployer, Executor};
        let lazy = crate::KubernetesBackend::lazy();
        assert_eq!(Executor::params(&lazy), super::executor());
        assert_eq!(Deployer::params(&lazy), super::deployer());
    }
}
