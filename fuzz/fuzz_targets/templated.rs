//! Configs with event data in every templated field. Whatever a stranger puts in a pull
//! request's title, branches and labels, a tag name or a release: planning never panics (an
//! unusable environment name is an error), every environment instance is a DNS label, event
//! data is never read as template syntax, commands are never rendered, and a template in a
//! command is refused, located, when the config loads.
//!
//! Input: control bytes, then the event's strings, separated by 0xFF (never in UTF-8):
//! `ctl 0xFF title 0xFF head 0xFF base 0xFF tag 0xFF labels 0xFF author 0xFF actor 0xFF repo
//! 0xFF sha 0xFF action`.
#![no_main]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use gitops_core::backend::BackendRegistry;
use gitops_core::backend::local::LocalBackend;
use gitops_core::config::{Config, LoadOptions, PULL_REQUEST_TYPES, is_instance_name};
use gitops_core::event::{
    EventPayload, GitEvent, PullRequestEvent, PushEvent, RefTip, ReleaseEvent, TagAction, TagEvent,
};
use gitops_core::plan::{Changes, PlanError, PlannedPipeline, PlannedSkip, Planner};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;

/// What the app loads configs with: the local backend as executor and deployer.
static OPTIONS: LazyLock<LoadOptions> = LazyLock::new(|| {
    let local = Arc::new(LocalBackend::new());
    LoadOptions::from_registry(
        &BackendRegistry::new()
            .with_executor("local", local.clone())
            .with_deployer("local", local),
    )
});

const FILE: &str = ".gitops.yml";

// ---------------------------------------------------------------------------------------------
// The event

struct Input {
    ctl: [u8; 16],
    fields: Vec<String>,
}

impl Input {
    fn new(data: &[u8]) -> Input {
        let mut parts = data.split(|&b| b == 0xFF);
        let mut ctl = [0u8; 16];
        let head = parts.next().unwrap_or_default();
        let n = head.len().min(ctl.len());
        ctl[..n].copy_from_slice(&head[..n]);
        let fields = parts
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        Input { ctl, fields }
    }

    fn field(&self, i: usize) -> String {
        self.fields.get(i).cloned().unwrap_or_default()
    }

    fn flag(&self, bit: u8) -> bool {
        self.ctl[2] & (1 << bit) != 0
    }

    fn event(&self) -> GitEvent {
        let title = self.field(0);
        let head = self.field(1);
        let base = self.field(2);
        let tag = self.field(3);
        let labels = self.field(4);
        let author = self.field(5);
        let actor = self.field(6);
        let repo = self.field(7);
        let sha = self.field(8);
        let action = self.field(9);
        let sha = (!self.flag(0)).then_some(sha);
        let pick = |words: &[&str]| match words.get(self.ctl[1] as usize % (words.len() + 1)) {
            Some(w) => w.to_string(),
            None => action.clone(),
        };
        let payload = match self.ctl[0] % 4 {
            0 => EventPayload::PullRequest(PullRequestEvent {
                action: pick(PULL_REQUEST_TYPES),
                number: u64::from_le_bytes(self.ctl[3..11].try_into().unwrap()),
                title,
                draft: self.flag(1),
                merged: self.flag(2),
                head: RefTip {
                    git_ref: head,
                    sha: sha.clone(),
                    repo: Some(repo.clone()),
                },
                base: RefTip {
                    git_ref: base,
                    sha: None,
                    repo: Some(repo.clone()),
                },
                fork: self.flag(3),
                labels: labels.split('\n').map(str::to_owned).collect(),
                author: self.flag(4).then_some(author),
            }),
            1 => EventPayload::Push(PushEvent {
                git_ref: format!("refs/heads/{head}"),
                branch: head,
                before: None,
                after: sha.clone(),
                created: self.flag(1),
                deleted: self.flag(2),
                forced: self.flag(3),
            }),
            2 => EventPayload::Tag(TagEvent {
                action: [TagAction::Created, TagAction::Moved, TagAction::Deleted]
                    [self.ctl[1] as usize % 3],
                version: gitops_core::release::parse_tag(&tag),
                name: tag,
            }),
            _ => EventPayload::Release(ReleaseEvent {
                action: pick(&["published", "prereleased", "created", "edited"]),
                version: gitops_core::release::parse_tag(&tag),
                tag,
                prerelease: self.flag(1),
                draft: self.flag(2),
            }),
        };
        GitEvent {
            payload,
            repo,
            sha,
            actor: self.flag(5).then_some(actor),
        }
    }
}

/// `event.<name>` for this event, computed here from the payload (not by the library), `None`
/// where the event has no such field.
fn event_field(e: &GitEvent, name: &str) -> Option<String> {
    let pr = match &e.payload {
        EventPayload::PullRequest(pr) => Some(pr),
        _ => None,
    };
    match name {
        "repo" => Some(e.repo.clone()),
        "sha" => e.sha.clone(),
        "branch" => match &e.payload {
            EventPayload::Push(p) => Some(p.branch.clone()),
            EventPayload::PullRequest(pr) => Some(pr.head.git_ref.clone()),
            _ => None,
        },
        "ref" => match &e.payload {
            EventPayload::Push(p) => Some(p.git_ref.clone()),
            EventPayload::PullRequest(pr) => Some(format!("refs/heads/{}", pr.head.git_ref)),
            EventPayload::Tag(t) => Some(format!("refs/tags/{}", t.name)),
            EventPayload::Release(r) => Some(format!("refs/tags/{}", r.tag)),
            _ => None,
        },
        "tag" => match &e.payload {
            EventPayload::Tag(t) => Some(t.name.clone()),
            EventPayload::Release(r) => Some(r.tag.clone()),
            _ => None,
        },
        "version" => match &e.payload {
            EventPayload::Tag(t) => t.version.as_ref().map(ToString::to_string),
            EventPayload::Release(r) => r.version.as_ref().map(ToString::to_string),
            _ => None,
        },
        "pr.title" => pr.map(|p| p.title.clone()),
        "pr.head_ref" => pr.map(|p| p.head.git_ref.clone()),
        "pr.base_ref" => pr.map(|p| p.base.git_ref.clone()),
        // Expressions hold numbers as f64: a whole number prints without decimals.
        "pr.number" => pr.map(|p| {
            let n = p.number as f64;
            if n < 1e15 {
                (n as i64).to_string()
            } else {
                n.to_string()
            }
        }),
        other => panic!("the target uses event.{other} but does not know it"),
    }
}

/// What the planner must make of `template` (written by this target: only `${{ event.* }}` and
/// `${{ env.* }}`, spelled with one space inside the braces): each `event.*` replaced by the
/// event's text, once; the rest kept as written.
fn render(template: &str, e: &GitEvent) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find("${{ ") {
        out.push_str(&rest[..open]);
        let close = rest[open..].find(" }}").expect("template in the target") + open;
        let inner = &rest[open + 4..close];
        match inner.strip_prefix("event.") {
            Some(field) => out.push_str(&event_field(e, field).unwrap_or_default()),
            None => out.push_str(&rest[open..close + 3]),
        }
        rest = &rest[close + 3..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// The config

/// A `with` value.
enum W {
    /// A string, rendered when it holds a template.
    T(&'static str),
    /// A list of them.
    L(&'static [&'static str]),
    /// A number, as it is.
    N(u64),
}

/// An `if:` and what it must evaluate to for an event (`None`: not known at planning time).
type Cond = (&'static str, fn(&GitEvent) -> Option<bool>);

struct StageSpec {
    id: &'static str,
    needs: Option<&'static str>,
    run: Option<&'static str>,
    deploy: Option<&'static str>,
    cond: Option<Cond>,
    env: &'static [(&'static str, &'static str)],
    with: &'static [(&'static str, W)],
}

struct PipelineSpec {
    name: &'static str,
    on: &'static str,
    group: Option<&'static str>,
    stages: &'static [StageSpec],
}

fn field(e: &GitEvent, name: &str) -> Option<String> {
    event_field(e, name)
}

const PR_ENV: &[(&str, &str)] = &[
    ("TITLE", "${{ event.pr.title }}"),
    ("HEAD", "${{ event.pr.head_ref }}"),
    ("BASE", "${{ event.pr.base_ref }}"),
    ("REPO", "${{ event.repo }}"),
    ("BRANCH", "${{ event.branch }}"),
    ("REF", "${{ event.ref }}"),
    ("SHA", "${{ event.sha }}"),
    (
        "MIXED",
        "#${{ event.pr.number }} ${{ event.pr.title }} (${{ event.pr.head_ref }} -> ${{ event.pr.base_ref }}) ${{ env.SECRET }}",
    ),
    ("SECRET", "${{ env.SECRET }}"),
    ("PLAIN", "echo $TITLE; ${ {x} } $$"),
];

const REF_ENV: &[(&str, &str)] = &[
    ("BRANCH", "${{ event.branch }}"),
    ("REF", "${{ event.ref }}"),
    ("TAG", "${{ event.tag }}"),
    ("VERSION", "${{ event.version }}"),
    ("SHA", "${{ event.sha }}"),
    ("REPO", "${{ event.repo }}"),
    (
        "MIXED",
        "${{ event.repo }}@${{ event.tag }}${{ event.branch }}:${{ env.TOKEN }}",
    ),
];

const PIPELINES: &[PipelineSpec] = &[
    PipelineSpec {
        name: "pr",
        on: "{ pull_request: { types: ALL_PR_TYPES } }",
        group: Some("pr-${{ event.pr.number }}-${{ event.pr.head_ref }}-${{ event.pr.title }}"),
        stages: &[
            StageSpec {
                id: "test",
                needs: None,
                run: Some("make test TITLE=\"$GITOPS_PR_TITLE\" # ${ {x} }"),
                deploy: None,
                cond: Some(("!contains(event.pr.title, 'skip ci')", |e| {
                    Some(!field(e, "pr.title").unwrap_or_default().contains("skip ci"))
                })),
                env: PR_ENV,
                with: &[],
            },
            StageSpec {
                id: "preview",
                needs: Some("test"),
                run: None,
                deploy: Some("preview"),
                cond: Some(("event.pr.head_ref != 'main' && !event.pr.draft", |e| {
                    let draft = matches!(&e.payload, EventPayload::PullRequest(p) if p.draft);
                    Some(field(e, "pr.head_ref").as_deref() != Some("main") && !draft)
                })),
                env: &[
                    ("TITLE", "${{ event.pr.title }}"),
                    ("HEAD", "${{ event.pr.head_ref }}"),
                ],
                with: &[
                    ("files", W::T("${{ event.pr.title }}")),
                    ("build", W::T("make site # $GITOPS_PR_TITLE")),
                    ("serve", W::T("python3 -m http.server $PORT")),
                    ("port", W::T("${{ event.pr.number }}")),
                    ("ready_timeout", W::N(5)),
                ],
            },
            StageSpec {
                id: "integration",
                needs: Some("preview"),
                run: Some("./integration.sh"),
                deploy: None,
                cond: Some((
                    "env.DEPLOY == 'yes' || contains(event.pr.title, '[it]')",
                    |e| {
                        field(e, "pr.title")
                            .unwrap_or_default()
                            .contains("[it]")
                            .then_some(true)
                    },
                )),
                env: &[("TITLE", "${{ event.pr.title }}")],
                with: &[],
            },
            StageSpec {
                id: "literal",
                needs: None,
                run: Some("echo literal"),
                deploy: None,
                cond: Some(("event.pr.title == '${{ event.sha }}'", |e| {
                    Some(field(e, "pr.title").as_deref() == Some("${{ event.sha }}"))
                })),
                env: &[("TITLE", "${{ event.pr.title }}")],
                with: &[],
            },
        ],
    },
    PipelineSpec {
        name: "pr-named",
        on: "{ pull_request: { types: ALL_PR_TYPES } }",
        group: Some("${{ event.pr.title }}"),
        stages: &[StageSpec {
            id: "deploy",
            needs: None,
            run: None,
            deploy: Some("named-pr"),
            cond: None,
            env: &[("TITLE", "${{ event.pr.title }}")],
            with: &[(
                "files",
                W::L(&[
                    "${{ event.pr.head_ref }}",
                    "${{ event.pr.base_ref }}",
                    "site",
                ]),
            )],
        }],
    },
    PipelineSpec {
        name: "push",
        on: "{ push: {} }",
        group: Some("push-${{ event.branch }}"),
        stages: &[
            StageSpec {
                id: "test",
                needs: None,
                run: Some("make test"),
                deploy: None,
                cond: Some((
                    "startsWith(event.branch, 'release/') || event.branch == 'main'",
                    |e| {
                        let b = field(e, "branch");
                        Some(
                            b.as_deref().unwrap_or_default().starts_with("release/")
                                || b.as_deref() == Some("main"),
                        )
                    },
                )),
                env: REF_ENV,
                with: &[],
            },
            StageSpec {
                id: "deploy",
                needs: Some("test"),
                run: None,
                deploy: Some("staging"),
                cond: Some(("${{ event.branch == 'main' }}", |e| {
                    Some(field(e, "branch").as_deref() == Some("main"))
                })),
                env: REF_ENV,
                with: &[("files", W::T("${{ event.branch }}"))],
            },
        ],
    },
    PipelineSpec {
        name: "release",
        on: "{ tag: { prerelease: true, types: [created, moved, deleted] }, release: { prerelease: true, types: [published, prereleased, created, edited] } }",
        group: Some("release-${{ event.tag }}-${{ event.version }}"),
        stages: &[StageSpec {
            id: "deploy",
            needs: None,
            run: None,
            deploy: Some("production"),
            cond: Some(
                ("event.version != null && !contains(event.tag, '..')", |e| {
                    Some(
                        field(e, "version").is_some()
                            && !field(e, "tag").unwrap_or_default().contains(".."),
                    )
                }),
            ),
            env: REF_ENV,
            with: &[(
                "files",
                W::L(&["${{ event.tag }}", "dist/${{ event.version }}"]),
            )],
        }],
    },
    PipelineSpec {
        name: "named",
        on: "{ push: {}, tag: { prerelease: true }, release: {} }",
        group: None,
        stages: &[StageSpec {
            id: "deploy",
            needs: None,
            run: None,
            deploy: Some("named"),
            cond: None,
            env: REF_ENV,
            with: &[("files", W::T("${{ event.tag }}${{ event.branch }}"))],
        }],
    },
];

/// Instance name templates, chosen by the control bytes.
const NAMES: &[&str] = &[
    "${{ event.branch }}",
    "pr-${{ event.pr.head_ref }}",
    "${{ event.pr.title }}",
    "${{ event.tag }}",
    "app-${{ event.version }}",
    "${{ event.pr.base_ref }}-${{ event.pr.number }}",
    "${{ event.repo }}",
    "x${{ event.sha }}",
    "preview-pr-${{ event.pr.number }}",
    "${{ event.ref }}",
];

/// The environments' names in the config.
const ENVIRONMENT_KEYS: &[&str] = &["preview", "named-pr", "named", "staging", "production"];

/// The environments: name and its YAML.
fn environments(named_pr: &str, named: &str) -> Vec<(&'static str, bool, Option<String>, String)> {
    vec![
        (
            "preview",
            true,
            None,
            "with: { files: \"${{ event.pr.title }}\" }".to_owned(),
        ),
        ("named-pr", true, Some(named_pr.to_owned()), String::new()),
        ("named", false, Some(named.to_owned()), String::new()),
        (
            "staging",
            false,
            None,
            "with: { files: [\"${{ event.branch }}\", site] }".to_owned(),
        ),
        (
            "production",
            false,
            None,
            "with: { files: \"${{ event.tag }}\", ready_timeout: 30 }".to_owned(),
        ),
    ]
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The config; `run` (YAML) replaces the command of the `pr` pipeline's first stage.
fn config_text(named_pr: &str, named: &str, run: Option<&str>) -> String {
    let types = format!("[{}]", PULL_REQUEST_TYPES.join(", "));
    let mut y = String::from("version: 1\nenvironments:\n");
    for (name, per_pr, template, rest) in environments(named_pr, named) {
        y.push_str(&format!("  {name}:\n    per_pull_request: {per_pr}\n"));
        if let Some(t) = template {
            y.push_str(&format!("    name: {}\n", q(&t)));
        }
        if !rest.is_empty() {
            y.push_str(&format!("    {rest}\n"));
        }
    }
    y.push_str("pipelines:\n");
    for p in PIPELINES {
        y.push_str(&format!(
            "  {}:\n    on: {}\n",
            p.name,
            p.on.replace("ALL_PR_TYPES", &types)
        ));
        if let Some(g) = p.group {
            y.push_str(&format!(
                "    concurrency: {{ group: {}, on_conflict: cancel }}\n",
                q(g)
            ));
        }
        y.push_str("    stages:\n");
        for s in p.stages {
            y.push_str(&format!("      {}:\n", s.id));
            if let Some(n) = s.needs {
                y.push_str(&format!("        needs: [{n}]\n"));
            }
            if let Some(r) = s.run {
                let r = match run {
                    Some(over) if (p.name, s.id) == ("pr", "test") => over.to_owned(),
                    _ => q(r),
                };
                y.push_str(&format!("        run: {r}\n"));
            }
            if let Some(d) = s.deploy {
                y.push_str(&format!("        deploy: {d}\n"));
            }
            if let Some((c, _)) = s.cond {
                y.push_str(&format!("        if: {}\n", q(c)));
            }
            if !s.env.is_empty() {
                y.push_str("        env:\n");
                for (k, v) in s.env {
                    y.push_str(&format!("          {k}: {}\n", q(v)));
                }
            }
            if !s.with.is_empty() {
                y.push_str("        with:\n");
                for (k, v) in s.with {
                    let v = match v {
                        W::T(t) => q(t),
                        W::L(items) => format!(
                            "[{}]",
                            items.iter().map(|i| q(i)).collect::<Vec<_>>().join(", ")
                        ),
                        W::N(n) => n.to_string(),
                    };
                    y.push_str(&format!("          {k}: {v}\n"));
                }
            }
        }
    }
    y
}

// ---------------------------------------------------------------------------------------------
// The checks

/// Checks a planned pipeline against its spec: instance names, rendered `env` and `with`,
/// commands as written, skips.
fn check_pipeline(p: &PlannedPipeline, spec: &PipelineSpec, e: &GitEvent, names: (&str, &str)) {
    if let (Some(g), Some(c)) = (spec.group, &p.concurrency) {
        assert_eq!(c.group, render(g, e), "{}: concurrency group", spec.name);
    }
    assert_eq!(p.stages.len(), spec.stages.len());
    let mut skipped: Vec<&str> = Vec::new();
    for s in spec.stages {
        let planned = p.stage(s.id).expect("every configured stage is planned");
        let what = format!("pipeline {}, stage {}", spec.name, s.id);
        assert_eq!(planned.run(), s.run, "{what}: run");
        if let Some(env) = &planned.environment {
            assert!(is_instance_name(env), "{what}: instance name {env:?}");
            let want = match s.deploy {
                Some("preview") => {
                    let EventPayload::PullRequest(pr) = &e.payload else {
                        panic!("{what}: a per-pull-request instance for a {}", e.kind())
                    };
                    format!("preview-pr-{}", pr.number)
                }
                Some("named-pr") => render(names.0, e),
                Some("named") => render(names.1, e),
                Some(other) => other.to_owned(),
                None => panic!("{what}: an environment for a run stage"),
            };
            assert_eq!(env, &want, "{what}: instance name");
        } else {
            assert!(s.deploy.is_none(), "{what}: a deploy without an instance");
        }
        let details = planned.details();
        for (k, t) in s.env {
            assert_eq!(details.env.get(*k), Some(&render(t, e)), "{what}: env.{k}");
        }
        assert_eq!(details.env.len(), s.env.len(), "{what}: env");
        for (k, w) in s.with {
            let want = match w {
                W::T(t) => Json::String(render(t, e)),
                W::L(items) => {
                    Json::Array(items.iter().map(|t| Json::String(render(t, e))).collect())
                }
                W::N(n) => Json::from(*n),
            };
            assert_eq!(details.with.get(*k), Some(&want), "{what}: with.{k}");
        }
        assert_eq!(details.with.len(), s.with.len(), "{what}: with");
        // The `if:` as the event decides it, then needs skipped (none of these `if:`s use a
        // status function, so each requires its needs to succeed).
        let want_skip = match s.cond {
            Some((c, truth)) if truth(e) == Some(false) => Some(PlannedSkip::ConditionFalse {
                expr: c
                    .trim_start_matches("${{ ")
                    .trim_end_matches(" }}")
                    .to_owned(),
            }),
            _ => s
                .needs
                .filter(|n| skipped.contains(n))
                .map(|n| PlannedSkip::NeedSkipped { need: n.to_owned() }),
        };
        assert_eq!(planned.skip(), want_skip.as_ref(), "{what}: skip");
        if want_skip.is_some() {
            skipped.push(s.id);
        }
    }
}

/// What planning `spec` alone must give: `Err` with the instance name that is unusable.
fn expected_outcome(spec: &PipelineSpec, e: &GitEvent, names: (&str, &str)) -> Result<(), String> {
    for s in spec.stages {
        let name = match s.deploy {
            Some("preview") | Some("named-pr")
                if !matches!(e.payload, EventPayload::PullRequest(_)) =>
            {
                return Err("not a pull request".to_owned());
            }
            Some("named-pr") => render(names.0, e),
            Some("named") => render(names.1, e),
            _ => continue,
        };
        if !is_instance_name(&name) {
            return Err(name);
        }
        // Another environment's own instance is never rendered into.
        if Some(name.as_str()) != s.deploy && ENVIRONMENT_KEYS.contains(&name.as_str()) {
            return Err(format!("another:{name}"));
        }
    }
    Ok(())
}

fn check_error(err: &PlanError, spec: &PipelineSpec, want: &str) {
    match err {
        PlanError::BadEnvironmentName { rendered, .. } => {
            assert!(!is_instance_name(rendered), "{err}");
            assert_eq!(rendered, want, "{}: {err}", spec.name);
        }
        PlanError::NotAPullRequest { .. } => assert_eq!(want, "not a pull request", "{err}"),
        PlanError::InstanceOfAnother { rendered, .. } => {
            assert_eq!(format!("another:{rendered}"), want, "{}: {err}", spec.name)
        }
        other => panic!("{}: unexpected error {other}", spec.name),
    }
}

/// A config with a template in a command (`run`, or the local deployer's `build` or `serve`,
/// in an environment's `with` or a deploy stage's) is refused, located at that command.
fn check_command_refused(ctl: u8, names: (&str, &str)) {
    const EXPRS: &[&str] = &[
        "${{ event.pr.title }}",
        "echo ${{ event.pr.head_ref }}",
        "make ${{event.sha}} && true",
        "${{ env.SECRET }}",
    ];
    let key = ["run", "build", "serve"][ctl as usize % 3];
    let value = q(EXPRS[ctl as usize / 3 % EXPRS.len()]);
    let in_stage = ctl / 12 % 2 == 1;
    let (run, from, to) = match (key, in_stage) {
        ("run", _) => (Some(value.as_str()), String::new(), String::new()),
        (_, false) => (
            None,
            "    with: { files: \"${{ event.pr.title }}\" }".to_owned(),
            format!("    with: {{ {key}: {value} }}"),
        ),
        (_, true) => {
            let (k, v) = PIPELINES[0].stages[1]
                .with
                .iter()
                .find(|(k, _)| *k == key)
                .expect("the preview stage has build and serve");
            let W::T(v) = v else { unreachable!() };
            (
                None,
                format!("          {k}: {}", q(v)),
                format!("          {key}: {value}"),
            )
        }
    };
    let mut text = config_text(names.0, names.1, run);
    if run.is_none() {
        assert!(text.contains(&from));
        text = text.replace(&from, &to);
    }
    let marker = match run {
        Some(v) => format!("        run: {v}"),
        None => to,
    };
    let line = text
        .lines()
        .position(|l| l == marker)
        .expect("the command is in the config")
        + 1;
    let err = Config::parse_with(FILE, &text, &OPTIONS).expect_err(&text);
    for d in &err.diagnostics {
        assert!(d.position.line >= 1 && d.position.column >= 1, "{d}");
    }
    assert!(
        err.diagnostics
            .iter()
            .any(|d| d.position.line == line && d.message.contains("template-expanded")),
        "{key}: {value}: {err}"
    );
}

/// The configs loaded so far, by their name templates: the text depends on nothing else, and
/// loading it again for every input would spend the run on YAML rather than on event data.
static CONFIGS: LazyLock<Vec<OnceLock<Config>>> = LazyLock::new(|| {
    (0..NAMES.len() * NAMES.len())
        .map(|_| OnceLock::new())
        .collect()
});

/// The variants of [`check_command_refused`] checked so far (24 of them; one bit each).
static REFUSED: AtomicU32 = AtomicU32::new(0);

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let event = input.event();
    let (a, b) = (
        input.ctl[11] as usize % NAMES.len(),
        input.ctl[12] as usize % NAMES.len(),
    );
    let names = (NAMES[a], NAMES[b]);
    // Built only from what the target chose: it must load, whatever the event.
    let config = CONFIGS[a * NAMES.len() + b].get_or_init(|| {
        let text = config_text(names.0, names.1, None);
        Config::parse_with(FILE, &text, &OPTIONS).unwrap_or_else(|e| panic!("{e}\n{text}"))
    });
    let planner = Planner::new();
    for spec in PIPELINES {
        let want = expected_outcome(spec, &event, names);
        match (planner.plan_named(&event, config, spec.name), want) {
            (Ok(p), Ok(())) => check_pipeline(&p, spec, &event, names),
            (Err(err), Err(want)) => check_error(&err, spec, &want),
            (Ok(_), Err(want)) => panic!(
                "{}: planned, but {want:?} is not an instance name",
                spec.name
            ),
            (Err(err), Ok(())) => panic!("{}: {err}", spec.name),
        }
    }
    // The event's own plan: what it triggers, checked the same way.
    match planner.plan(&event, config, &Changes::Unknown) {
        Ok(plan) => {
            assert_eq!(plan.event, event);
            for p in &plan.pipelines {
                let spec = PIPELINES.iter().find(|s| s.name == p.name).unwrap();
                check_pipeline(p, spec, &event, names);
            }
            serde_json::to_string(&plan).unwrap();
        }
        Err(PlanError::BadEnvironmentName { rendered, .. }) => {
            assert!(!is_instance_name(&rendered))
        }
        Err(PlanError::NotAPullRequest { .. }) => {
            assert!(!matches!(event.payload, EventPayload::PullRequest(_)))
        }
        Err(PlanError::InstanceOfAnother { rendered, .. }) => {
            assert!(ENVIRONMENT_KEYS.contains(&rendered.as_str()))
        }
        Err(other) => panic!("{other}"),
    }
    let variant = input.ctl[13] % 24;
    if REFUSED.fetch_or(1 << variant, Ordering::Relaxed) & (1 << variant) == 0 {
        check_command_refused(variant, names);
    }
});
