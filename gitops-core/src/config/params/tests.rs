use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{MAX_SECONDS, ParamKind, ParamSchema, check};
use crate::config::{Config, LoadOptions};

/// The problems of `{ key: value }` under a schema with one parameter `key` of `kind`, as
/// `path: message` lines.
fn problems(kind: ParamKind, value: Value) -> Vec<String> {
    let schema = ParamSchema::new().with("key", kind, "a parameter");
    run(&schema, json!({ "key": value }))
}

fn run(schema: &ParamSchema, with: Value) -> Vec<String> {
    let with: IndexMap<String, Value> = serde_json::from_value(with).unwrap();
    check(schema, &with, "backend \"b\"")
        .into_iter()
        .map(|p| format!("{}: {}", p.path.join("."), p.message))
        .collect()
}

fn ok(kind: ParamKind, value: Value) {
    let found = problems(kind.clone(), value.clone());
    assert!(found.is_empty(), "{kind:?} {value}: {found:?}");
}

fn bad(kind: ParamKind, value: Value, expected: &str) {
    let found = problems(kind.clone(), value.clone());
    assert!(
        found.len() == 1 && found[0].contains(expected),
        "{kind:?} {value}: expected one problem with {expected:?}, found {found:?}"
    );
}

#[test]
fn whole_numbers_at_their_limits_and_one_past() {
    let port = ParamKind::port();
    ok(port.clone(), json!(1));
    ok(port.clone(), json!(65535));
    ok(port.clone(), json!("8080"));
    bad(
        port.clone(),
        json!(0),
        "key: must be a whole number from 1 to 65535, found 0",
    );
    bad(port.clone(), json!(65536), "found 65536");
    bad(port.clone(), json!("65536"), "found \"65536\"");
    bad(port.clone(), json!(-1), "found -1");
    bad(port.clone(), json!(80.5), "found 80.5");
    bad(port.clone(), json!("80s"), "found \"80s\"");
    bad(port, json!(true), "found true");
    let seconds = ParamKind::seconds();
    ok(seconds.clone(), json!(0));
    ok(seconds.clone(), json!(MAX_SECONDS));
    assert_eq!(MAX_SECONDS, 604_800);
    bad(
        seconds,
        json!(MAX_SECONDS + 1),
        "from 0 to 604800, found 604801",
    );
}

#[test]
fn a_template_is_accepted_where_only_the_rendered_value_has_a_type() {
    let t = json!("${{ stages.a.outputs.port }}");
    for kind in [
        ParamKind::port(),
        ParamKind::Bool,
        ParamKind::String,
        ParamKind::Path,
        ParamKind::PathOrList,
        ParamKind::StringOrList,
        ParamKind::one_of(&["plan", "validate"]),
        ParamKind::Any,
    ] {
        ok(kind, t.clone());
    }
    // A template renders to a string, never to a list or a map.
    for kind in [
        ParamKind::StringList,
        ParamKind::PathList,
        ParamKind::StringMap,
        ParamKind::Map(ParamSchema::open()),
        ParamKind::MapOf(ParamSchema::open()),
    ] {
        bad(kind, t.clone(), "must be");
    }
    ok(ParamKind::StringList, json!(["a", "${{ event.sha }}"]));
    ok(ParamKind::StringMap, json!({ "A": "${{ event.sha }}" }));
    ok(ParamKind::PathList, json!(["${{ event.branch }}/x"]));
}

#[test]
fn commands_refuse_templates() {
    ok(
        ParamKind::Command,
        json!("echo \"building $GITOPS_PR_TITLE\""),
    );
    bad(
        ParamKind::Command,
        json!("echo building ${{ event.pr.title }}"),
        "key: `key` is a command, and commands are never template-expanded, so that event data cannot inject commands; pass values through `env`",
    );
    bad(
        ParamKind::Command,
        json!(["echo"]),
        "must be a command (a string)",
    );
    ok(ParamKind::CommandArgs, json!(["sh", "-c", "echo $X"]));
    bad(
        ParamKind::CommandArgs,
        json!(["sh", "-c", "echo ${{ event.branch }}"]),
        "key.2: `key` is a command",
    );
    bad(
        ParamKind::CommandArgs,
        json!([]),
        "a non-empty list of command arguments",
    );
    bad(
        ParamKind::CommandArgs,
        json!("sh -c x"),
        "a non-empty list of command arguments",
    );
    bad(
        ParamKind::CommandArgs,
        json!(["sh", 1]),
        "key.1: must be a string",
    );
    // Nested: a command inside a map of maps is found too.
    let services =
        ParamKind::MapOf(ParamSchema::new().with("command", ParamKind::CommandArgs, "argv"));
    bad(
        services,
        json!({ "web": { "command": ["${{ event.sha }}"] } }),
        "key.web.command.0: `command` is a command",
    );
}

#[test]
fn paths_stay_inside_the_checkout() {
    ok(ParamKind::Path, json!("infra/prod"));
    ok(ParamKind::Path, json!("./Dockerfile"));
    bad(
        ParamKind::Path,
        json!("../x"),
        "must be a path inside the checkout (relative, without ..), found \"../x\"",
    );
    bad(ParamKind::Path, json!("/etc"), "found \"/etc\"");
    bad(
        ParamKind::Path,
        json!(["a"]),
        "must be a path inside the checkout",
    );
    ok(ParamKind::PathList, json!(["a.tfvars", "b/c.tfvars"]));
    bad(
        ParamKind::PathList,
        json!("a.tfvars"),
        "must be a list of paths",
    );
    bad(
        ParamKind::PathList,
        json!(["a", "a/../../b"]),
        "key.1: must be a path",
    );
    ok(ParamKind::PathOrList, json!("app.txt"));
    ok(ParamKind::PathOrList, json!(["app.txt", "site"]));
    bad(
        ParamKind::PathOrList,
        json!("../app.txt"),
        "key: must be a path inside the checkout or a list of such paths",
    );
    bad(ParamKind::PathOrList, json!([1]), "key.0: must be a path");
    bad(ParamKind::PathOrList, json!({ "a": 1 }), "found {\"a\":1}");
}

#[test]
fn strings_lists_maps_and_words() {
    ok(ParamKind::String, json!(""));
    bad(ParamKind::String, json!(1), "must be a string, found 1");
    ok(ParamKind::Bool, json!(false));
    bad(ParamKind::Bool, json!("yes"), "must be true or false");
    ok(ParamKind::StringList, json!([]));
    bad(
        ParamKind::StringList,
        json!(["a", 2]),
        "key.1: must be a string",
    );
    bad(
        ParamKind::StringList,
        json!("a"),
        "must be a list of strings",
    );
    ok(ParamKind::StringOrList, json!("a"));
    ok(ParamKind::StringOrList, json!(["a", "b"]));
    bad(
        ParamKind::StringOrList,
        json!(3),
        "must be a string or a list of strings",
    );
    ok(ParamKind::StringMap, json!({ "A": "x", "N": 1, "B": true }));
    bad(
        ParamKind::StringMap,
        json!({ "A": ["x"] }),
        "key.A: must be a string",
    );
    bad(
        ParamKind::StringMap,
        json!(["A=x"]),
        "must be a map of names to strings",
    );
    let words = ParamKind::one_of(&["plan", "validate"]);
    ok(words.clone(), json!("validate"));
    bad(
        words,
        json!("apply"),
        "must be one of plan, validate, found \"apply\"",
    );
    ok(ParamKind::Any, json!({ "anything": [1, { "at": "all" }] }));
    // Null counts as absent.
    ok(ParamKind::port(), Value::Null);
}

#[test]
fn unknown_keys_with_a_suggestion_when_close() {
    let schema = ParamSchema::new()
        .with("port", ParamKind::port(), "")
        .with("ready_timeout", ParamKind::seconds(), "")
        .with(
            "services",
            ParamKind::MapOf(ParamSchema::new().with("image", ParamKind::String, "")),
            "",
        );
    assert_eq!(
        run(&schema, json!({ "prot": 1 })),
        [
            "prot: unknown parameter \"prot\" for backend \"b\", did you mean \"port\"? (known: port, ready_timeout, services)"
        ]
    );
    assert_eq!(
        run(&schema, json!({ "readytimeout": 1 })),
        [
            "readytimeout: unknown parameter \"readytimeout\" for backend \"b\", did you mean \"ready_timeout\"? (known: port, ready_timeout, services)"
        ]
    );
    assert_eq!(
        run(&schema, json!({ "colour": 1 })),
        [
            "colour: unknown parameter \"colour\" for backend \"b\" (known: port, ready_timeout, services)"
        ]
    );
    assert_eq!(
        run(&schema, json!({ "services": { "web": { "imgae": "x" } } })),
        [
            "services.web.imgae: unknown parameter \"imgae\" for backend \"b\", did you mean \"image\"? (known: image)"
        ]
    );
    assert_eq!(
        run(&ParamSchema::new(), json!({ "image": "x" })),
        ["image: unknown parameter \"image\": backend \"b\" takes no `with` parameters here"]
    );
    // An open schema takes any key, and still checks those it declares.
    let open = ParamSchema::open().with("port", ParamKind::port(), "");
    assert!(run(&open, json!({ "whatever": [1], "x": "${{ a }}" })).is_empty());
    assert_eq!(
        run(&open, json!({ "port": 0 })),
        ["port: must be a whole number from 1 to 65535, found 0"]
    );
}

#[test]
fn validation_locates_problems_in_stages_and_environments() {
    let deploy = ParamSchema::new()
        .with("build", ParamKind::Command, "")
        .with("port", ParamKind::port(), "");
    let run_params = ParamSchema::new().with("image", ParamKind::String, "");
    let options = LoadOptions::default()
        .with_deploy_params("local", deploy)
        .with_run_params("docker", run_params);
    let yaml = r#"version: 1
environments:
  web: { with: { port: 70000 } }
pipelines:
  ci:
    on: { push: {} }
    stages:
      d: { deploy: web, with: { prot: 80 } }
      t: { backend: docker, with: { image: "${{ event.sha }}", imgae: x } }
      u: { backend: local, run: make }
"#;
    let err = Config::parse_with(".gitops.yml", yaml, &options).unwrap_err();
    let lines: Vec<String> = err.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            ".gitops.yml:3:24: environments.web.with.port: must be a whole number from 1 to 65535, found 70000",
            ".gitops.yml:8:33: pipelines.ci.stages.d.with.prot: unknown parameter \"prot\" for backend \"local\", did you mean \"port\"? (known: build, port)",
            ".gitops.yml:9:64: pipelines.ci.stages.t.with.imgae: unknown parameter \"imgae\" for backend \"docker\", did you mean \"image\"? (known: image)",
        ]
    );
    // Without schemas (the default), nothing is checked.
    Config::parse(".gitops.yml", yaml).unwrap();
}
