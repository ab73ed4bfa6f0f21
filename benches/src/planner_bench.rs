//! Inputs of the planner benchmark: configs of many pipelines with branch, tag-semver and path
//! filters, and a mix of events.

use gitops_core::config::Config;
use gitops_core::event::GitEvent;
use gitops_core::plan::Changes;

/// A config of `n` pipelines: a third filter pushes by branch and path, a third pull requests
/// by base branch and path, a third tags by semver range.
pub fn config(n: usize) -> Config {
    let mut yaml = String::from("version: 1\npipelines:\n");
    for i in 0..n {
        let on = match i % 3 {
            0 => format!(
                "{{ push: {{ branches: [\"main\", \"release/{i}.*\"], paths: [\"src/{i}/**\", \"!**/*.md\"] }} }}"
            ),
            1 => format!("{{ pull_request: {{ branches: [main], paths: [\"svc-{i}/**\"] }} }}"),
            _ => format!(
                "{{ tag: {{ semver: \">={}.0.0, <{}.0.0\" }} }}",
                i % 7,
                i % 7 + 2
            ),
        };
        yaml.push_str(&format!(
            "  p{i}:\n    on: {on}\n    stages:\n      test: {{ run: make test }}\n      deploy: {{ needs: test, run: make deploy, env: {{ SHA: \"${{{{ event.sha }}}}\" }} }}\n"
        ));
    }
    Config::parse("bench.yml", &yaml).unwrap_or_else(|e| panic!("bench config: {e}"))
}

/// The events planned, each with the paths it changed.
pub fn events() -> Vec<(GitEvent, Changes)> {
    let push = |branch: &str| -> GitEvent {
        serde_json::from_value(serde_json::json!({"kind": "push", "repo": "o/r", "sha": "abc", "ref": format!("refs/heads/{branch}"),
            "branch": branch, "before": "b", "after": "abc", "created": false, "deleted": false, "forced": false}))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let pr: GitEvent = serde_json::from_value(
        serde_json::json!({"kind": "pull_request", "repo": "o/r", "sha": "abc",
        "action": "synchronize", "number": 7, "title": "t", "draft": false, "merged": false,
        "head": {"ref": "feature", "sha": "abc"}, "base": {"ref": "main", "sha": "def"}}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tag: GitEvent = serde_json::from_value(
        serde_json::json!({"kind": "tag", "repo": "o/r", "sha": "abc",
        "action": "created", "name": "v3.1.0", "version": "3.1.0"}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let paths = |p: &[&str]| Changes::Paths(p.iter().map(|s| s.to_string()).collect());
    vec![
        (push("main"), paths(&["src/3/lib.rs", "README.md"])),
        (push("feature/x"), paths(&["src/0/a.rs"])),
        (pr, paths(&["svc-4/main.go", "docs/x.md"])),
        (tag, Changes::Unknown),
    ]
}
