//! The four flows of DESIGN's example config plan as a user expects, and plans are dry runs
//! that say what they could not check and which stages the event already skips.

use gitops_core::config::Config;
use gitops_core::event::*;
use gitops_core::plan::{Changes, Plan, PlannedSkip, Planner};
use serde_json::json;

const DESIGN: &str = include_str!("data/design.gitops.yml");

fn config() -> Config {
    Config::parse(".gitops.yml", DESIGN).unwrap()
}

fn pr(action: &str, number: u64, base: &str, merged: bool) -> GitEvent {
    GitEvent {
        payload: EventPayload::PullRequest(PullRequestEvent {
            action: action.into(),
            number,
            title: "Add feature".into(),
            draft: false,
            merged,
            head: RefTip {
                git_ref: "feature".into(),
                sha: Some("a1".into()),
                repo: None,
            },
            base: RefTip {
                git_ref: base.into(),
                sha: Some("b2".into()),
                repo: None,
            },
            author: None,
            fork: false,
            labels: Vec::new(),
        }),
        repo: "octo/app".into(),
        sha: Some("a1".into()),
        actor: None,
    }
}

fn push(branch: &str) -> GitEvent {
    GitEvent {
        payload: EventPayload::Push(PushEvent {
            git_ref: format!("refs/heads/{branch}"),
            branch: branch.into(),
            before: Some("c0".into()),
            after: Some("c1".into()),
            created: false,
            deleted: false,
            forced: false,
        }),
        repo: "octo/app".into(),
        sha: Some("c1".into()),
        actor: None,
    }
}

fn tag(name: &str) -> GitEvent {
    GitEvent {
        payload: EventPayload::Tag(TagEvent {
            action: TagAction::Created,
            name: name.into(),
            version: gitops_core::release::parse_tag(name),
        }),
        repo: "octo/app".into(),
        sha: Some("d1".into()),
        actor: None,
    }
}

fn plan(event: &GitEvent, changes: &Changes) -> Plan {
    Planner::new().plan(event, &config(), changes).unwrap()
}

fn names(p: &Plan) -> Vec<&str> {
    p.pipelines.iter().map(|p| p.name.as_str()).collect()
}

#[test]
fn pull_request_opened_deploys_a_preview_of_its_own() {
    let p = plan(
        &pr("opened", 7, "main", false),
        &Changes::Paths(vec!["src/lib.rs".into()]),
    );
    assert_eq!(names(&p), ["pull-request"]);
    let pipeline = &p.pipelines[0];
    assert_eq!(
        pipeline.order().collect::<Vec<_>>(),
        ["test", "build", "preview", "integration"]
    );
    let preview = pipeline.stage("preview").unwrap();
    assert_eq!(preview.environment.as_deref(), Some("preview-pr-7"));
    assert_eq!(&*preview.backend, "docker");
    assert_eq!(pipeline.concurrency.as_ref().unwrap().group, "pr-7");
    assert_eq!(pipeline.paths_checked, Some(true));
    // What the event resolves is filled in; stage outputs wait for the run.
    assert_eq!(
        pipeline.stage("build").unwrap().details().with["tag"],
        json!("app:a1")
    );
    assert_eq!(
        preview.details().with["image"],
        json!("${{ stages.build.outputs.image }}")
    );
    assert_eq!(
        serde_json::to_value(pipeline.stage("integration").unwrap()).unwrap(),
        json!({"id": "integration", "needs": ["preview"], "backend": "local", "action": "run",
               "environment": null, "run": "./scripts/integration.sh",
               "env": {"BASE_URL": "${{ stages.preview.outputs.url }}"}})
    );

    for action in ["synchronize", "reopened"] {
        assert_eq!(
            names(&plan(&pr(action, 7, "main", false), &Changes::Unknown)),
            ["pull-request"]
        );
    }
    // Another base branch, an ignored action, or no change under src/: nothing.
    assert!(
        plan(&pr("opened", 7, "develop", false), &Changes::Unknown)
            .pipelines
            .is_empty()
    );
    assert!(
        plan(&pr("edited", 7, "main", false), &Changes::Unknown)
            .pipelines
            .is_empty()
    );
    assert!(
        plan(
            &pr("opened", 7, "main", false),
            &Changes::Paths(vec!["README.md".into()])
        )
        .pipelines
        .is_empty()
    );
}

#[test]
fn unknown_changes_match_paths_filters_and_say_so() {
    let p = plan(&pr("opened", 7, "main", false), &Changes::Unknown);
    assert_eq!(p.pipelines[0].paths_checked, Some(false));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["pipelines"][0]["paths_checked"], json!(false));
    assert_eq!(json["event"]["kind"], "pull_request");
}

#[test]
fn pull_request_closed_tears_down_the_same_environment() {
    for merged in [false, true] {
        let p = plan(&pr("closed", 7, "main", merged), &Changes::Unknown);
        assert_eq!(names(&p), ["pull-request-closed"]);
        let teardown = p.pipelines[0].stage("teardown").unwrap();
        assert_eq!(
            serde_json::to_value(teardown).unwrap(),
            json!({"id": "teardown", "needs": [], "backend": "docker", "action": "stop",
                   "environment": "preview-pr-7", "environment_config": "preview"})
        );
    }
}

#[test]
fn push_to_main_deploys_staging_and_other_branches_do_nothing() {
    let p = plan(&push("main"), &Changes::Unknown);
    assert_eq!(names(&p), ["main"]);
    assert_eq!(
        p.pipelines[0].order().collect::<Vec<_>>(),
        ["test", "deploy"]
    );
    let deploy = p.pipelines[0].stage("deploy").unwrap();
    assert_eq!(
        (deploy.environment.as_deref(), &*deploy.backend),
        (Some("staging"), "docker")
    );
    assert!(
        plan(&push("feature/x"), &Changes::Unknown)
            .pipelines
            .is_empty()
    );
    let mut deleted = push("main");
    if let EventPayload::Push(p) = &mut deleted.payload {
        p.deleted = true;
        p.after = None;
    }
    assert!(plan(&deleted, &Changes::Unknown).pipelines.is_empty());
}

#[test]
fn release_tags_deploy_production_and_prereleases_do_not() {
    let p = plan(&tag("v1.2.0"), &Changes::Unknown);
    assert_eq!(names(&p), ["release"]);
    let deploy = p.pipelines[0].stage("deploy").unwrap();
    assert_eq!(deploy.environment.as_deref(), Some("production"));
    assert_eq!(&*deploy.backend, "terraform");
    assert_eq!(deploy.details().with["vars"]["version"], json!("1.2.0"));
    assert!(
        plan(&tag("v1.3.0-rc.1"), &Changes::Unknown)
            .pipelines
            .is_empty()
    );
    assert!(
        plan(&tag("nightly"), &Changes::Unknown)
            .pipelines
            .is_empty()
    );
    assert!(plan(&tag("v0.0.9"), &Changes::Unknown).pipelines.is_empty());
    let mut deleted = tag("v1.2.0");
    if let EventPayload::Tag(t) = &mut deleted.payload {
        t.action = TagAction::Deleted;
    }
    assert!(plan(&deleted, &Changes::Unknown).pipelines.is_empty());
}

#[test]
fn prerelease_true_lets_release_candidates_match_the_range() {
    let yaml = "version: 1\npipelines:\n  rc:\n    on: { tag: { semver: \">=1.0.0\", prerelease: true } }\n    stages: { d: { run: x } }\n";
    let c = Config::parse("f", yaml).unwrap();
    let planned = |t: &str| {
        Planner::new()
            .plan(&tag(t), &c, &Changes::Unknown)
            .unwrap()
            .pipelines
            .len()
    };
    assert_eq!(planned("v2.0.0-rc.1"), 1);
    assert_eq!(planned("v2.0.0"), 1);
    assert_eq!(planned("v0.9.0-rc.1"), 0);
    assert_eq!(planned("latest"), 0);
}

#[test]
fn conditions_decided_by_the_event_skip_stages_and_their_dependents() {
    let yaml = r#"version: 1
pipelines:
  ci:
    on: { push: {}, pull_request: {} }
    stages:
      test: { run: make test }
      publish: { needs: test, if: "event.branch == 'main'", run: make publish }
      announce: { needs: publish, run: ./announce }
      cleanup: { needs: publish, if: "always()", run: ./cleanup }
      later: { needs: test, if: "event.kind == 'push' && stages.test.outputs.ok == 'yes'", run: x }
"#;
    let c = Config::parse("f", yaml).unwrap();
    let p = Planner::new()
        .plan(&push("dev"), &c, &Changes::Unknown)
        .unwrap();
    let s = |id: &str| p.pipelines[0].stage(id).unwrap().skip().cloned();
    assert_eq!(s("test"), None);
    assert_eq!(
        s("publish"),
        Some(PlannedSkip::ConditionFalse {
            expr: "event.branch == 'main'".into()
        })
    );
    assert_eq!(
        s("announce"),
        Some(PlannedSkip::NeedSkipped {
            need: "publish".into()
        })
    );
    assert_eq!(s("cleanup"), None);
    // Undecidable before the run: not skipped.
    assert_eq!(s("later"), None);
    let json = serde_json::to_value(p.pipelines[0].stage("publish").unwrap()).unwrap();
    assert_eq!(
        json["skip"],
        json!({"reason": "condition_false", "expr": "event.branch == 'main'"})
    );

    let on_main = Planner::new()
        .plan(&push("main"), &c, &Changes::Unknown)
        .unwrap();
    assert!(
        on_main.pipelines[0]
            .stages
            .iter()
            .all(|s| s.skip().is_none())
    );
    let on_pr = Planner::new()
        .plan(&pr("opened", 1, "main", false), &c, &Changes::Unknown)
        .unwrap();
    assert_eq!(
        on_pr.pipelines[0].stage("later").unwrap().skip().cloned(),
        Some(PlannedSkip::ConditionFalse {
            expr: "event.kind == 'push' && stages.test.outputs.ok == 'yes'".into()
        })
    );
}

#[test]
fn per_pull_request_environment_on_a_push_is_a_plan_error() {
    let yaml = "version: 1\nenvironments:\n  preview: { per_pull_request: true }\npipelines:\n  both:\n    on: { push: {}, pull_request: {} }\n    stages: { d: { deploy: preview } }\n";
    let c = Config::parse("f", yaml).unwrap();
    let err = Planner::new()
        .plan(&push("main"), &c, &Changes::Unknown)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pipeline \"both\", stage \"d\": environment \"preview\" is per pull request, but the event is a push"
    );
    let ok = Planner::new()
        .plan(&pr("opened", 3, "main", false), &c, &Changes::Unknown)
        .unwrap();
    assert_eq!(
        ok.pipelines[0].stages[0].environment.as_deref(),
        Some("preview-pr-3")
    );
}

#[test]
fn named_environments_and_events_that_plan_nothing() {
    let yaml = "version: 1\nenvironments:\n  review: { per_pull_request: true, name: \"review-${{ event.pr.head_ref }}\" }\npipelines:\n  pr:\n    on: { pull_request: {} }\n    stages: { d: { deploy: review } }\n";
    let c = Config::parse("f", yaml).unwrap();
    let p = Planner::new()
        .plan(&pr("opened", 3, "main", false), &c, &Changes::Unknown)
        .unwrap();
    assert_eq!(
        p.pipelines[0].stages[0].environment.as_deref(),
        Some("review-feature")
    );
    let ping = GitEvent {
        payload: EventPayload::Ping,
        repo: "o/r".into(),
        sha: None,
        actor: None,
    };
    assert!(plan(&ping, &Changes::Unknown).pipelines.is_empty());
    let branch = GitEvent {
        payload: EventPayload::Branch(BranchEvent {
            action: BranchAction::Created,
            name: "main".into(),
        }),
        repo: "o/r".into(),
        sha: None,
        actor: None,
    };
    assert!(plan(&branch, &Changes::Unknown).pipelines.is_empty());
}

#[test]
fn planning_is_deterministic() {
    let e = pr("opened", 7, "main", false);
    let a = serde_json::to_string(&plan(&e, &Changes::Unknown)).unwrap();
    let b = serde_json::to_string(&plan(&e, &Changes::Unknown)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_pipeline_changed_after_planning_is_planned_from_its_new_stages() {
    let mut c = Config::parse("f", "version: 1\npipelines:\n  p:\n    on: { push: {} }\n    stages:\n      a: { run: x }\n      b: { run: y, needs: a }\n").unwrap();
    // One planner, which keeps the pipeline's graph from its first plan.
    let planner = Planner::new();
    let first = planner.plan(&push("main"), &c, &Changes::Unknown).unwrap();
    assert_eq!(first.pipelines[0].order().collect::<Vec<_>>(), ["a", "b"]);
    // Reverse the dependency: b first, then a.
    let p = c.pipelines.get_mut("p").unwrap();
    std::sync::Arc::make_mut(p.stages.get_mut("b").unwrap())
        .needs
        .clear();
    std::sync::Arc::make_mut(p.stages.get_mut("a").unwrap()).needs = vec!["b".into()];
    let second = planner.plan(&push("main"), &c, &Changes::Unknown).unwrap();
    assert_eq!(second.pipelines[0].order().collect::<Vec<_>>(), ["b", "a"]);
    assert_eq!(
        first.pipelines[0].order().collect::<Vec<_>>(),
        ["a", "b"],
        "an earlier plan keeps its own graph"
    );
    // A change that makes the graph unsound is an error, not a panic.
    std::sync::Arc::make_mut(
        c.pipelines
            .get_mut("p")
            .unwrap()
            .stages
            .get_mut("b")
            .unwrap(),
    )
    .needs = vec!["a".into()];
    let err = planner
        .plan(&push("main"), &c, &Changes::Unknown)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pipeline \"p\": cycle in needs: a -> b -> a"
    );
}

#[test]
fn a_plan_checks_that_its_backends_can_do_what_its_stages_ask() {
    use gitops_core::backend::BackendRegistry;
    use gitops_core::backend::memory::MemoryBackend;
    use gitops_core::plan::PlanError;
    use std::sync::Arc;
    let p = plan(&push("main"), &Changes::Unknown);
    let main = &p.pipelines[0];
    // `main` runs `test` on local and deploys staging on docker.
    let refused = |registry: &BackendRegistry| match main.check_backends(registry) {
        Err(PlanError::UnknownBackend {
            stage,
            backend,
            needed,
            known,
            ..
        }) => (stage, backend, needed, known),
        other => panic!("{other:?}"),
    };
    let memory = Arc::new(MemoryBackend::new());
    let none = BackendRegistry::new();
    assert_eq!(
        refused(&none),
        ("test".into(), "local".into(), "an executor", String::new())
    );
    let executors = BackendRegistry::new()
        .with_executor("local", memory.clone())
        .with_executor("docker", memory.clone());
    assert_eq!(
        refused(&executors),
        (
            "deploy".into(),
            "docker".into(),
            "a deployer",
            "docker, local".into()
        )
    );
    let both = executors.with_deployer("docker", memory);
    assert!(main.check_backends(&both).is_ok());
}
