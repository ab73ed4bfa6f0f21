//! `.gitops.yml` parsing: DESIGN's example loads; every kind of bad config gives one precise,
//! located message.

use gitops_core::config::{Action, Config, LoadOptions, OnConflict};

const DESIGN: &str = include_str!("data/design.gitops.yml");

#[test]
fn design_example_loads() {
    let c = Config::parse(".gitops.yml", DESIGN).unwrap();
    assert_eq!(
        c.pipelines.keys().collect::<Vec<_>>(),
        ["pull-request", "pull-request-closed", "main", "release"]
    );
    let pr = &c.pipelines["pull-request"];
    assert_eq!(
        pr.concurrency.as_ref().unwrap().on_conflict,
        OnConflict::Cancel
    );
    assert_eq!(pr.stages["preview"].action(), Action::Deploy);
    assert_eq!(pr.stages["preview"].environment(), Some("preview"));
    assert_eq!(
        c.pipelines["pull-request-closed"].stages["teardown"].action(),
        Action::Stop
    );
    assert!(c.environments["preview"].per_pull_request);
    assert_eq!(c.environments["production"].backend, "terraform");
}

/// Parses `yaml` and returns the single diagnostic it must produce.
fn error(yaml: &str) -> String {
    let err = Config::parse(".gitops.yml", yaml).expect_err("config should be rejected");
    assert_eq!(
        err.diagnostics.len(),
        1,
        "expected one diagnostic, got:\n{err}"
    );
    err.to_string()
}

fn pipeline(stages: &str) -> String {
    format!(
        "version: 1\nenvironments:\n  staging: {{}}\npipelines:\n  ci:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n{stages}"
    )
}

#[test]
fn malformed_yaml() {
    assert_eq!(
        error("version: 1\npipelines:\n  ci:\n    on: [push\n"),
        ".gitops.yml:5:1: while parsing a flow sequence, expected ',' or ']'"
    );
    assert_eq!(
        error("version: 1\n  pipelines: {}\n"),
        ".gitops.yml:2:12: mapping values are not allowed in this context"
    );
    assert_eq!(error("   \n"), ".gitops.yml:1:1: the file is empty");
}

#[test]
fn wrong_types_and_unknown_keys() {
    let msg = error(&pipeline("      test: { run: make, needs: 5 }\n"));
    assert_eq!(
        msg,
        ".gitops.yml:8:33: pipelines.ci.stages.test.needs: invalid type: integer `5`, expected a string or a list of strings"
    );
    let msg = error(&pipeline("      test: { runs: make }\n"));
    assert!(
        msg.starts_with(
            ".gitops.yml:8:15: pipelines.ci.stages.test: unknown field `runs`, expected one of"
        ),
        "{msg}"
    );
    let msg = error("version: 1\npipelines: {}\nextra: true\n");
    assert!(
        msg.starts_with(".gitops.yml:3:1: unknown field `extra`"),
        "{msg}"
    );
    let msg = error(&pipeline("      test: { run: make, timeout: 5 minutes }\n"));
    assert!(
        msg.starts_with(
            ".gitops.yml:8:35: pipelines.ci.stages.test.timeout: invalid duration \"5 minutes\""
        ),
        "{msg}"
    );
    let msg = error(&pipeline("      test: { run: make, retry: { max: -1 } }\n"));
    assert!(msg.starts_with(".gitops.yml:8:40: pipelines.ci.stages.test.retry.max: invalid type: integer `-1`, expected u32"), "{msg}");
    let msg = error(
        "version: 1\npipelines:\n  ci:\n    on: { pull_request: { types: [opend] } }\n    stages: { t: { run: x } }\n",
    );
    assert!(msg.starts_with(".gitops.yml:4:35: pipelines.ci.on.pull_request.types[0]: unknown pull request type \"opend\""), "{msg}");
    let msg = error(
        "version: 1\npipelines:\n  ci:\n    on: { tag: { semver: \">=1.0.0 <<2\" } }\n    stages: { t: { run: x } }\n",
    );
    assert!(msg.starts_with(".gitops.yml:4:26: pipelines.ci.on.tag.semver: invalid semver requirement \">=1.0.0 <<2\""), "{msg}");
    let msg = error(
        "version: 1\npipelines:\n  ci:\n    on: { push: { branches: [\"a/[\"] } }\n    stages: { t: { run: x } }\n",
    );
    assert!(
        msg.starts_with(
            ".gitops.yml:4:30: pipelines.ci.on.push.branches[0]: invalid pattern \"a/[\""
        ),
        "{msg}"
    );
    let msg = error(
        "version: 2\npipelines:\n  ci:\n    on: { push: {} }\n    stages: { t: { run: x } }\n",
    );
    assert_eq!(msg, ".gitops.yml:1:10: unsupported version 2 (expected 1)");
}

#[test]
fn graph_errors() {
    assert_eq!(
        error(&pipeline(
            "      a: { run: x, needs: [b] }\n      b: { run: x, needs: [c] }\n      c: { run: x, needs: [a] }\n"
        )),
        ".gitops.yml:8:7: pipeline \"ci\": cycle in needs: a -> b -> c -> a"
    );
    assert_eq!(
        error(&pipeline(
            "      a: { run: x }\n      b:\n        run: x\n        needs: [a, biuld]\n"
        )),
        ".gitops.yml:11:20: pipeline \"ci\": stage \"b\" needs unknown stage \"biuld\""
    );
    assert_eq!(
        error(&pipeline("      a: { run: x }\n      a: { run: y }\n")),
        ".gitops.yml:9:7: duplicate key \"a\""
    );
    assert_eq!(
        error(&pipeline("      a: { run: x, needs: a }\n")),
        ".gitops.yml:8:7: pipeline \"ci\": cycle in needs: a -> a"
    );
}

#[test]
fn expression_errors() {
    assert_eq!(
        error(&pipeline("      a: { run: x, if: \"event.branch ==\" }\n")),
        ".gitops.yml:8:24: pipelines.ci.stages.a.if: expected a value at the end of the expression (at offset 15) in `if: event.branch ==`"
    );
    assert_eq!(
        error(&pipeline(
            "      a: { run: x, env: { B: \"${{ event.brnch }}\" } }\n"
        )),
        ".gitops.yml:8:30: pipelines.ci.stages.a.env.B: unknown name \"event.brnch\" (event fields: kind, action, ref, branch, sha, tag, version, repo, pr.number, pr.title, pr.head_ref, pr.base_ref, pr.draft, pr.merged)"
    );
    assert_eq!(
        error(&pipeline(
            "      a: { run: x }\n      b: { run: x, env: { U: \"${{ stages.a.outputs.url }}\" } }\n"
        )),
        ".gitops.yml:9:30: pipelines.ci.stages.b.env.U: \"stages.a.outputs.url\" refers to stage \"a\", which this stage does not need (add it to `needs`)"
    );
    assert_eq!(
        error(&pipeline(
            "      a: { run: x, with: { image: \"${{ stages.nope.outputs.x }}\" } }\n"
        )),
        ".gitops.yml:8:35: pipelines.ci.stages.a.with.image: unknown stage \"nope\" in \"stages.nope.outputs.x\""
    );
    assert_eq!(
        error(&pipeline(
            "      a: { run: x }\n      b: { run: x, needs: [a], if: \"stages.a.outputs\" }\n"
        )),
        ".gitops.yml:9:36: pipelines.ci.stages.b.if: unknown name \"stages.a.outputs\" (expected stages.a.outputs.<key> or stages.a.result) in `if: stages.a.outputs`"
    );
    assert_eq!(
        error(&pipeline(
            "      a: { run: x, env: { B: \"${{ always() }}\" } }\n"
        )),
        ".gitops.yml:8:30: pipelines.ci.stages.a.env.B: always() can only be used in `if:`"
    );
    let msg = error(&pipeline(
        "      a: { run: x, env: { B: \"${{ event.sha\" } }\n",
    ));
    assert!(
        msg.starts_with(".gitops.yml:8:30: pipelines.ci.stages.a.env.B: unterminated \"${{\""),
        "{msg}"
    );
    assert_eq!(
        error(
            "version: 1\npipelines:\n  ci:\n    on: { push: {} }\n    concurrency: { group: \"${{ stages.a.result }}\" }\n    stages: { a: { run: x } }\n"
        ),
        ".gitops.yml:5:27: pipelines.ci.concurrency.group: unknown stage \"a\" in \"stages.a.result\""
    );
    // A transitive need may be referred to.
    Config::parse(
        ".gitops.yml",
        &pipeline("      a: { run: x }\n      b: { run: x, needs: a }\n      c: { run: x, needs: b, if: \"stages.a.result == 'success' && always()\" }\n"),
    )
    .unwrap();
}

#[test]
fn stage_and_reference_errors() {
    assert_eq!(
        error(&pipeline("      a: { deploy: prod }\n")),
        ".gitops.yml:8:20: stage \"a\": unknown environment \"prod\" (environments: staging)"
    );
    assert_eq!(
        error(&pipeline("      a: { run: x, backend: nomad }\n")),
        ".gitops.yml:8:29: stage \"a\": unknown backend \"nomad\" (known: local, docker, terraform, k8s)"
    );
    Config::parse_with(
        ".gitops.yml",
        &pipeline("      a: { run: x, backend: nomad }\n"),
        &LoadOptions::default().with_backend("nomad"),
    )
    .unwrap();
    assert_eq!(
        error(&pipeline("      a: { needs: [] }\n")),
        ".gitops.yml:8:7: stage \"a\" does nothing: give it `run`, `deploy`, `stop`, or `with` parameters for its backend"
    );
    assert_eq!(
        error(&pipeline(
            "      a: { run: \"echo ${{ event.branch }}\" }\n"
        )),
        ".gitops.yml:8:17: stage \"a\": `run` is never template-expanded, so that event data cannot inject commands; pass values through `env` (env: { NAME: \"${{ ... }}\" }) and read $NAME"
    );
    assert_eq!(
        error(&pipeline("      a: { deploy: staging, stop: staging }\n")),
        ".gitops.yml:8:35: stage \"a\" has both `deploy` and `stop`; use one stage for each"
    );
    assert_eq!(
        error(&pipeline("      a: { run: x, env: { GITOPS_SHA: y } }\n")),
        ".gitops.yml:8:27: environment variable \"GITOPS_SHA\": the GITOPS_ prefix is reserved for the variables gitops sets"
    );
    assert_eq!(
        error(&pipeline("      1st: { run: x }\n")),
        ".gitops.yml:8:7: invalid stage name \"1st\" (use letters, digits, '_' and '-', starting with a letter or '_')"
    );
    assert_eq!(
        error(
            "version: 1\nenvironments:\n  preview: { per_pull_request: true }\npipelines:\n  main:\n    on: { push: {} }\n    stages: { d: { deploy: preview } }\n"
        ),
        ".gitops.yml:7:28: stage \"d\": environment \"preview\" is per pull request, but pipeline \"main\" is not triggered by pull requests"
    );
    assert_eq!(
        error("version: 1\npipelines:\n  ci:\n    on: {}\n    stages: { a: { run: x } }\n"),
        ".gitops.yml:4:9: pipeline \"ci\" has no trigger (expected pull_request, push, tag or release under `on`)"
    );
}

#[test]
fn several_problems_are_all_reported_in_file_order() {
    let err = Config::parse(
        ".gitops.yml",
        &pipeline("      a: { run: x, needs: [nope] }\n      b: { deploy: nowhere }\n"),
    )
    .unwrap_err();
    let lines: Vec<String> = err.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with(".gitops.yml:8:28: "), "{err}");
    assert!(lines[1].starts_with(".gitops.yml:9:20: "), "{err}");
}

#[test]
fn environment_policies_load_and_bad_ones_are_located() {
    let c = Config::parse(
        ".gitops.yml",
        "version: 1\nenvironments:\n  production: { approval: required, on_locked: fail, on_pinned: fail, auto_stop_after: 2h }\npipelines:\n  p: { on: { push: {} }, stages: { a: { run: x } } }\n",
    )
    .unwrap();
    let p = &c.environments["production"];
    assert_eq!(p.approval, gitops_core::config::Approval::Required);
    assert_eq!(p.on_locked, gitops_core::config::OnBusy::Fail);
    assert_eq!(
        p.auto_stop_after,
        Some(std::time::Duration::from_secs(7200))
    );
    let defaults = Config::parse(
        ".gitops.yml",
        "version: 1\nenvironments:\n  staging: {}\npipelines:\n  p: { on: { push: {} }, stages: { a: { run: x } } }\n",
    )
    .unwrap();
    let s = &defaults.environments["staging"];
    assert_eq!(
        (s.approval, s.on_locked, s.on_pinned, s.auto_stop_after),
        (
            gitops_core::config::Approval::None,
            gitops_core::config::OnBusy::Wait,
            gitops_core::config::OnBusy::Wait,
            None
        )
    );
    let bad = error(
        "version: 1\nenvironments:\n  staging: { approval: sometimes }\npipelines:\n  p: { on: { push: {} }, stages: { a: { run: x } } }\n",
    );
    assert!(bad.starts_with(".gitops.yml:3:"), "{bad}");
    assert!(
        bad.contains("sometimes") && bad.contains("required"),
        "{bad}"
    );
    let bad = error(
        "version: 1\nenvironments:\n  staging: { auto_stop_after: soon }\npipelines:\n  p: { on: { push: {} }, stages: { a: { run: x } } }\n",
    );
    assert!(bad.starts_with(".gitops.yml:3:"), "{bad}");
    assert!(bad.contains("soon"), "{bad}");
}

#[test]
fn checkout_mode_is_reuse_fresh_or_a_located_error() {
    use gitops_core::config::CheckoutMode;
    let with = |mode: &str| {
        format!(
            "version: 1\npipelines:\n  ci:\n    on: {{ push: {{ branches: [main] }} }}\n    {mode}\n    stages:\n      a: {{ run: x }}\n"
        )
    };
    let c = Config::parse(".gitops.yml", &with("")).unwrap();
    assert_eq!(c.pipelines["ci"].checkout, CheckoutMode::Reuse);
    let c = Config::parse(".gitops.yml", &with("checkout: fresh")).unwrap();
    assert_eq!(c.pipelines["ci"].checkout, CheckoutMode::Fresh);
    let c = Config::parse(".gitops.yml", &with("checkout: reuse")).unwrap();
    assert_eq!(c.pipelines["ci"].checkout, CheckoutMode::Reuse);
    let msg = error(&with("checkout: pristine"));
    assert!(
        msg.starts_with(".gitops.yml:5:15: ") && msg.contains("unknown variant `pristine`"),
        "{msg}"
    );
}
