//! The `with` parameters the local backend declares, as config validation checks them.

use std::sync::Arc;

use gitops_core::backend::BackendRegistry;
use gitops_core::backend::local::LocalBackend;
use gitops_core::config::{Config, LoadOptions};

/// What the app loads configs with when the local backend is its only one.
fn options() -> LoadOptions {
    let local = Arc::new(LocalBackend::new());
    LoadOptions::from_registry(
        &BackendRegistry::new()
            .with_executor("local", local.clone())
            .with_deployer("local", local),
    )
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
        err.starts_with(".gitops.yml:8:40: pipelines.ci.stages.d.with.build: `build` is a command"),
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
