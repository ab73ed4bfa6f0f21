//! `gitops demo`: a throwaway repository and the whole flow, on the local backend.

use gitops_core::config::{Action, LoadOptions};
use gitops_core::event::*;
use gitops_core::plan::{Plan, Planner};
use gitops_core::repo::Repository;
use gitops_examples::scratch::ScratchRepo;

const CONFIG: &str = r#"version: 1
environments:
  preview: { per_pull_request: true }
  staging: {}
  production: {}
pipelines:
  pull-request:
    on: { pull_request: { types: [opened, synchronize, reopened], branches: [main] } }
    concurrency: { group: "pr-${{ event.pr.number }}", on_conflict: cancel }
    stages:
      test: { run: ./scripts/test.sh }
      build: { needs: test, run: ./scripts/build.sh }
      preview: { needs: build, deploy: preview }
      smoke: { needs: preview, run: ./scripts/smoke.sh, env: { URL: "${{ stages.preview.outputs.url }}" } }
  pull-request-closed:
    on: { pull_request: { types: [closed] } }
    stages:
      teardown: { stop: preview }
  main:
    on: { push: { branches: [main] } }
    stages:
      test: { run: ./scripts/test.sh }
      deploy: { needs: test, deploy: staging }
  release:
    on: { tag: { semver: ">=1.0.0" } }
    stages:
      deploy: { deploy: production, with: { version: "${{ event.version }}" } }
"#;

type Error = Box<dyn std::error::Error + Send + Sync>;

pub fn run() -> Result<(), String> {
    demo().map_err(|e| format!("error: demo failed: {e}"))
}

fn demo() -> Result<(), Error> {
    let dir = tempfile::Builder::new().prefix("gitops-demo-").tempdir()?;
    let mut scratch = ScratchRepo::init(dir.path())?;
    println!(
        "gitops demo: a throwaway repository in {}",
        dir.path().display()
    );
    println!("(it is removed when the demo ends)\n");

    let base = scratch.commit(
        "main",
        None,
        "Initial app",
        &[
            (".gitops.yml", CONFIG),
            ("app.txt", "hello"),
            ("scripts/test.sh", "#!/bin/sh\ngrep -q hello app.txt\n"),
            (
                "scripts/build.sh",
                "#!/bin/sh\necho \"artifact=$(cat app.txt)\" >> \"$GITOPS_OUTPUT\"\n",
            ),
            ("scripts/smoke.sh", "#!/bin/sh\ntest -n \"$URL\"\n"),
        ],
    )?;
    let head = scratch.commit(
        "feature/greeting",
        Some(&base),
        "Greet the world",
        &[("app.txt", "hello, world")],
    )?;
    scratch.set_ref("refs/pull/1/head", &head)?;
    let repo = Repository::open(scratch.path())?;

    let pr = |action: &str, merged: bool| GitEvent {
        payload: EventPayload::PullRequest(PullRequestEvent {
            action: action.into(),
            number: 1,
            title: "Greet the world".into(),
            draft: false,
            merged,
            head: RefTip {
                git_ref: "feature/greeting".into(),
                sha: Some(head.clone()),
            },
            base: RefTip {
                git_ref: "main".into(),
                sha: Some(base.clone()),
            },
        }),
        repo: "demo/app".into(),
        sha: Some(head.clone()),
    };
    step(
        &repo,
        "pull request #1 opened (feature/greeting → main)",
        &pr("opened", false),
    )?;
    step(&repo, "pull request #1 merged", &pr("closed", true))?;

    // Merged by fast-forward: main moves to the pull request's head.
    scratch.set_ref("refs/heads/main", &head)?;
    let merge = head.clone();
    let push = GitEvent {
        payload: EventPayload::Push(PushEvent {
            git_ref: "refs/heads/main".into(),
            branch: "main".into(),
            before: Some(base.clone()),
            after: Some(merge.clone()),
            created: false,
            deleted: false,
            forced: false,
        }),
        repo: "demo/app".into(),
        sha: Some(merge.clone()),
    };
    step(&repo, &format!("push to main ({})", &merge[..7]), &push)?;
    for name in ["v1.0.0", "v1.1.0-rc.1"] {
        scratch.set_ref(&format!("refs/tags/{name}"), &merge)?;
        let tag = GitEvent {
            payload: EventPayload::Tag(TagEvent {
                action: TagAction::Created,
                name: name.into(),
                version: gitops_core::release::parse_tag(name),
            }),
            repo: "demo/app".into(),
            sha: Some(merge.clone()),
        };
        step(&repo, &format!("tag {name}"), &tag)?;
    }
    println!("The demo plans each event. Deploying to environments is not wired up yet;");
    println!(
        "`gitops run --event FILE --repo DIR` already runs pipelines whose stages run commands."
    );
    Ok(())
}

fn step(repo: &Repository, title: &str, event: &GitEvent) -> Result<(), Error> {
    println!("▸ {title}");
    let commit = repo.commit_for(event)?;
    let config = repo.config_at(&commit, &LoadOptions::default())?;
    let plan = Planner::new().plan(event, &config, &repo.changes_for(event))?;
    print_plan(&plan);
    println!();
    Ok(())
}

fn print_plan(plan: &Plan) {
    if plan.pipelines.is_empty() {
        println!("    nothing to run: no pipeline matches this event");
    }
    for p in &plan.pipelines {
        let stages: Vec<String> = p
            .order
            .iter()
            .filter_map(|id| p.stage(id))
            .map(|s| match (s.action, &s.environment) {
                (Action::Deploy, Some(env)) => format!("{} [deploy {env}]", s.id),
                (Action::Stop, Some(env)) => format!("{} [stop {env}]", s.id),
                _ => s.id.clone(),
            })
            .collect();
        println!("    pipeline {:<20} {}", p.name, stages.join(" → "));
    }
}
