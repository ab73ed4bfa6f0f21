//! What the Docker backend reads from `with`, declared for config validation: keep in step with
//! `executor.rs`, `build.rs` and `deploy.rs`, which read these keys (a test below holds the
//! deployment's keys to the lists `deploy.rs` checks at run time).

use gitops_core::backend::{ParamKind, ParamSchema};

/// A stage: a container of `image`, or an image build.
pub(crate) fn executor() -> ParamSchema {
    ParamSchema::new()
        .with(
            "image",
            ParamKind::String,
            "the image the stage's container runs",
        )
        .with(
            "command",
            ParamKind::CommandArgs,
            "the container's command as argv (default: the stage's `run` with sh -c)",
        )
        .with(
            "dockerfile",
            ParamKind::Path,
            "builds an image from this Dockerfile, in `context` (default Dockerfile)",
        )
        .with(
            "context",
            ParamKind::Path,
            "builds an image from this directory of the checkout (default .)",
        )
        .with(
            "tag",
            ParamKind::String,
            "the built image's tag (default gitops-<repo>:<commit>)",
        )
}

/// One service of an environment.
fn service() -> ParamSchema {
    ParamSchema::new()
        .with("image", ParamKind::String, "the service's image")
        .with(
            "port",
            ParamKind::port(),
            "the container port published on 127.0.0.1",
        )
        .with(
            "host_port",
            ParamKind::port(),
            "the host port to publish it on (default: a free one)",
        )
        .with(
            "command",
            ParamKind::CommandArgs,
            "the container's command as argv (default: the image's)",
        )
        .with(
            "env",
            ParamKind::StringMap,
            "environment variables of the container",
        )
        .with(
            "health_path",
            ParamKind::String,
            "the path an HTTP GET checks readiness on (default /)",
        )
        .with(
            "volumes",
            ParamKind::StringList,
            "named volumes of the environment, as name:/path",
        )
}

/// A deployment: one service's keys directly, or several under `services`.
pub(crate) fn deployer() -> ParamSchema {
    service()
        .with(
            "services",
            ParamKind::MapOf(service()),
            "the environment's services by name",
        )
        .with(
            "primary",
            ParamKind::String,
            "the service whose address is the `url` output",
        )
        .with(
            "ready_timeout",
            ParamKind::seconds(),
            "seconds for every service to be ready (default 30)",
        )
}

#[cfg(test)]
mod tests {
    use gitops_core::config::{Config, LoadOptions};

    fn parse(yaml: &str) -> Result<Config, String> {
        let options = LoadOptions::default()
            .with_run_params("docker", super::executor())
            .with_deploy_params("docker", super::deployer());
        Config::parse_with(".gitops.yml", yaml, &options).map_err(|e| e.to_string())
    }

    /// A config whose only pipeline has `stages` (indented by six), with a docker environment
    /// `preview`.
    fn config(stages: &str) -> String {
        format!(
            "version: 1\nenvironments:\n  preview: {{ per_pull_request: true, backend: docker }}\npipelines:\n  pr:\n    on: {{ pull_request: {{}} }}\n    stages:\n{stages}"
        )
    }

    #[test]
    fn accepts_the_documented_examples() {
        // README.md, "Environments" (with the `build` stage it refers to).
        parse(&config(
            r#"      build: { backend: docker, with: { dockerfile: Dockerfile } }
      preview:
        needs: build
        deploy: preview
        with:
          ready_timeout: 60
          services:
            web: { image: "${{ stages.build.outputs.image }}", port: 8080, env: { DB: "db:5432" } }
            db:  { image: "db:16", volumes: ["data:/var/lib/db"] }
"#,
        ))
        .unwrap();
        // README.md, "A config", and examples/src/bin/docker-preview.rs.
        parse(&config(
            r#"      build: { backend: docker, with: { dockerfile: Dockerfile, tag: "app:${{ event.sha }}" } }
      preview: { needs: build, deploy: preview, with: { image: "${{ stages.build.outputs.image }}" } }
      site: { backend: docker, with: { dockerfile: Dockerfile, tag: "gitops-starter-site:${{ event.sha }}" } }
      deploy: { needs: site, deploy: preview, with: { image: "${{ stages.site.outputs.image }}", port: 8080, health_path: /index.html } }
      down: { stop: preview }
"#,
        ))
        .unwrap();
        // deploy.rs's module docs, examples/tests and the crate docs' keys.
        parse(&config(
            r#"      deploy:
        deploy: preview
        with:
          primary: web
          ready_timeout: 60
          services:
            web: { image: "app:${{ event.sha }}", port: 8080, host_port: 18080, command: [httpd, -f], health_path: /health }
            db:  { image: "db:16", volumes: ["data:/var/lib/db"] }
      slow: { backend: docker, with: { image: busybox }, run: "sleep 1" }
      argv: { backend: docker, with: { image: busybox, command: [sh, -c, "echo $GITOPS_PR_TITLE"] } }
      built: { backend: docker, with: { context: web, dockerfile: web/Dockerfile } }
"#,
        ))
        .unwrap();
    }

    #[test]
    fn refuses_unknown_keys_and_templates_in_commands() {
        let err = parse(&config(
            "      b: { backend: docker, with: { image: x, comand: [sh] } }\n",
        ))
        .unwrap_err();
        assert!(err.contains("did you mean \"command\"?"), "{err}");
        let err = parse(&config(
            "      b: { backend: docker, with: { image: x, command: [sh, -c, \"echo ${{ event.pr.title }}\"] } }\n",
        ))
        .unwrap_err();
        assert!(
            err.contains("pipelines.pr.stages.b.with.command[2]: `command` is a command"),
            "{err}"
        );
        let err = parse(&config(
            "      d: { deploy: preview, with: { services: { web: { image: x, command: [\"${{ event.branch }}\"] } } } }\n",
        ))
        .unwrap_err();
        assert!(
            err.contains(
                "pipelines.pr.stages.d.with.services.web.command[0]: `command` is a command"
            ),
            "{err}"
        );
        let err = parse(&config(
            "      d: { deploy: preview, with: { services: { web: { image: x, prot: 80 } } } }\n",
        ))
        .unwrap_err();
        assert!(
            err.contains("services.web.prot: unknown parameter \"prot\""),
            "{err}"
        );
        let err = parse(&config(
            "      d: { deploy: preview, with: { port: 70000 } }\n",
        ))
        .unwrap_err();
        assert!(err.contains("from 1 to 65535, found 70000"), "{err}");
        let err = parse(&config(
            "      b: { backend: docker, with: { context: ../outside } }\n",
        ))
        .unwrap_err();
        assert!(
            err.contains("with.context: must be a path inside the checkout"),
            "{err}"
        );
    }

    #[test]
    fn the_deployment_schema_has_the_keys_deploy_rs_reads() {
        let deployer = super::deployer();
        let mut declared = deployer.names();
        let mut read: Vec<&str> = crate::deploy::SERVICE_KEYS
            .iter()
            .chain(&crate::deploy::DEPLOY_KEYS)
            .copied()
            .collect();
        declared.sort_unstable();
        read.sort_unstable();
        assert_eq!(declared, read);
        let service = super::service();
        assert_eq!(service.names(), crate::deploy::SERVICE_KEYS);
    }

    #[test]
    fn the_lazy_backend_declares_them_before_it_connects() {
        use gitops_core::backend::{Deployer, Executor};
        let lazy = crate::DockerBackend::builder().lazy();
        assert_eq!(Executor::params(&lazy), super::executor());
        assert_eq!(Deployer::params(&lazy), super::deployer());
    }
}
