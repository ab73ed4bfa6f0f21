//! `gitops serve --github-token-env` (or `--github-app-id` and `--github-app-key-file`) reports
//! the runs of GitHub deliveries to GitHub: a commit status per pipeline, a deployment per deploy with its statuses, and one pull request comment
//! edited in place, sent to a stand-in of GitHub's REST API on loopback.
//!
//! The stand-in answers as GitHub's REST description (API version 2022-11-28) documents:
//! `POST .../statuses/{sha}` and `POST .../deployments` 201 with the object (its `id`),
//! `POST .../deployments/{id}/statuses` 201, `GET .../issues/{n}/comments` 200 with a list,
//! `POST .../issues/{n}/comments` 201 with the comment, `PATCH .../issues/comments/{id}` 200.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use common::git;
use common::server::{Server, fixture, github, request, wait_until};
use serde_json::{Value, json};

/// `gitops serve` of `clone`, reporting to the GitHub stand-in at `api` with a token; `extra`
/// arguments and `env` variables after those.
fn reporting(
    state: &std::path::Path,
    clone: &std::path::Path,
    api: SocketAddr,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let api_url = format!("http://{api}");
    let args = [
        "--allow-unsigned",
        "--repo-name",
        "o/upstream",
        "--github-token-env",
        "TEST_GITHUB_TOKEN",
        "--github-api-url",
        &api_url,
        "--public-url",
        "https://gitops.example",
    ];
    let env = [&[("TEST_GITHUB_TOKEN", "t0ken-for-tests")], env].concat();
    Server::start(state, clone, &[&args[..], extra].concat(), &env)
}

#[test]
fn a_pushed_commit_gets_a_pending_then_a_success_status() {
    let fx = fixture(
        "version: 1\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      build: { run: \"sleep 1\" }\n",
    );
    let (api, seen) = github_stand_in();
    let server = reporting(&fx.state, &fx.clone, api, &[], &[]);
    let (status, reply) = github(server.addr, "push", "d-1", &fx.push("a"), None);
    assert_eq!(status, 202, "{reply}");
    wait_until("two statuses", || seen.lock().unwrap().len() >= 2);
    let seen = seen.lock().unwrap().clone();
    let states: Vec<&str> = seen
        .iter()
        .map(|s| s.body["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "success"]);
    for Call {
        method,
        path,
        auth,
        body,
    } in &seen
    {
        assert_eq!(method, "POST");
        assert_eq!(path, &format!("/repos/o/upstream/statuses/{}", fx.after));
        assert_eq!(auth, "Bearer t0ken-for-tests");
        assert_eq!(body["context"], "gitops/main");
        let url = body["target_url"].as_str().unwrap();
        assert!(url.starts_with("https://gitops.example/runs/"), "{url}");
    }
    assert!(
        !server.log().iter().any(|l| l.contains("t0ken-for-tests")),
        "the token reached the log"
    );
}

/// A request to the forge stand-in: method, path (with its query), `Authorization` (or GitLab's
/// `PRIVATE-TOKEN`) and body.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    auth: String,
    body: Value,
}

/// A GitHub stand-in for statuses, deployments and comments: ids count up from 100. As GitHub
/// does for an App, it answers the installation lookup (200, id 7) and the token exchange (201,
/// token `ghs_served`).
fn github_stand_in() -> (SocketAddr, Arc<Mutex<Vec<Call>>>) {
    github_stand_in_on(TcpListener::bind("127.0.0.1:0").unwrap())
}

/// [`github_stand_in`] on `listener`.
fn github_stand_in_on(listener: TcpListener) -> (SocketAddr, Arc<Mutex<Vec<Call>>>) {
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let record = calls.clone();
    std::thread::spawn(move || {
        let mut next_id = 100;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let (mut length, mut auth) = (0, String::new());
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" | "private-token" => auth = value.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut parts = request_line.split(' ');
            let method = parts.next().unwrap_or("").to_owned();
            let path = parts.next().unwrap_or("").to_owned();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            next_id += 1;
            let (status, answer) = match method.as_str() {
                "GET" if path.ends_with("/installation") => ("200 OK", json!({"id": 7})),
                "POST" if path.ends_with("/access_tokens") => (
                    "201 Created",
                    json!({"token": "ghs_served", "expires_at": "2099-01-01T00:00:00Z"}),
                ),
                "GET" => ("200 OK", json!([])),
                "PATCH" => (
                    "200 OK",
                    json!({"id": path.rsplit('/').next().unwrap().parse::<u64>().unwrap(), "body": body["body"]}),
                ),
                _ => ("201 Created", json!({"id": next_id})),
            };
            record.lock().unwrap().push(Call {
                method,
                path,
                auth,
                body,
            });
            let answer = answer.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (addr, calls)
}

#[test]
fn a_pull_request_gets_its_preview_deployment_and_one_comment_edited_in_place() {
    let Some(busybox) = common::busybox() else {
        return;
    };
    let config = format!(
        r#"version: 1
environments:
  preview: {{ per_pull_request: true, with: {{ serve: "exec {} httpd -f -p 127.0.0.1:$PORT -h ." }} }}
  production: {{}}
pipelines:
  pr:
    on: {{ pull_request: {{ types: [opened, synchronize] }} }}
    stages:
      build: {{ run: "true" }}
      preview: {{ deploy: preview, needs: [build], with: {{ files: app.txt }} }}
  checks:
    on: {{ pull_request: {{ types: [opened, synchronize] }} }}
    stages:
      test: {{ run: "for i in $(seq 1 30); do echo line-$i; done; echo '@admin </details>'; echo token=$TEST_SECRET; exit 3" }}
  release:
    on: {{ tag: {{}} }}
    stages:
      ship: {{ deploy: production, with: {{ files: app.txt }} }}
  teardown:
    on: {{ pull_request: {{ types: [closed] }} }}
    stages:
      stop: {{ stop: preview }}
"#,
        busybox.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let upstream = tmp.path().join("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    git(&upstream, &["init", "-q", "-b", "main"]);
    std::fs::write(upstream.join(".gitops.yml"), config).unwrap();
    std::fs::write(upstream.join("app.txt"), "one").unwrap();
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-qm", "one"]);
    let base = git(&upstream, &["rev-parse", "HEAD"]);
    git(&upstream, &["checkout", "-qb", "feature"]);
    std::fs::write(upstream.join("app.txt"), "two").unwrap();
    git(&upstream, &["commit", "-qam", "two"]);
    let head = git(&upstream, &["rev-parse", "HEAD"]);
    git(&upstream, &["checkout", "-q", "main"]);
    let clone = tmp.path().join("clone");
    let (up, cl) = (upstream.to_str().unwrap(), clone.to_str().unwrap());
    git(tmp.path(), &["clone", "-q", up, cl]);
    let (api, calls) = github_stand_in();
    // The policy gives member pull requests a secret, and marks production.
    let policy = tmp.path().join("policy.yml");
    std::fs::write(
        &policy,
        "secrets:\n  TEST_SECRET: { from_env: TEST_SECRET_VALUE, pull_requests: true }\nenvironments:\n  production: { production: true }\n",
    )
    .unwrap();
    let mut server = reporting(
        &tmp.path().join("state"),
        &clone,
        api,
        &["--policy", policy.to_str().unwrap()],
        &[("TEST_SECRET_VALUE", "s3cret-in-the-log")],
    );
    let pr = |action: &str, merged: bool| {
        serde_json::to_vec(
            &json!({"action": action, "number": 4, "sender": {"login": "octo"},
            "pull_request": {"title": "t", "draft": false, "merged": merged, "labels": [],
                "user": {"login": "octo"},
                "head": {"ref": "feature", "sha": head, "repo": {"full_name": "o/upstream"}},
                "base": {"ref": "main", "sha": base, "repo": {"full_name": "o/upstream"}}},
            "repository": {"full_name": "o/upstream"}}),
        )
        .unwrap()
    };
    let of = |method: &str, part: &str| -> Vec<Call> {
        (calls.lock().unwrap().iter())
            .filter(|c| c.method == method && c.path.contains(part))
            .cloned()
            .collect()
    };
    let (status, reply) = github(
        server.addr,
        "pull_request",
        "d-open",
        &pr("opened", false),
        None,
    );
    assert_eq!(status, 202, "{reply}");
    let final_status = |context: &str| {
        of("POST", "/statuses/")
            .into_iter()
            .filter(|c| c.body["context"] == context && c.body["state"] != "pending")
            .count()
    };
    wait_until("both pipelines' final statuses", || {
        final_status("gitops/pr") == 1 && final_status("gitops/checks") == 1
    });
    wait_until("the deployment's success", || {
        of("POST", "/deployments/")
            .iter()
            .any(|c| c.body["state"] == "success")
    });

    // One deployment, for the preview's instance, transient, of the head commit.
    let deployments = of("POST", "/repos/o/upstream/deployments");
    let created: Vec<&Call> = deployments
        .iter()
        .filter(|c| c.path == "/repos/o/upstream/deployments")
        .collect();
    assert_eq!(created.len(), 1, "{deployments:?}");
    let d = &created[0].body;
    assert_eq!(d["ref"], head.as_str());
    assert_eq!(d["environment"], "preview-pr-4");
    assert_eq!(d["auto_merge"], false);
    assert_eq!(d["required_contexts"], json!([]));
    assert_eq!(d["transient_environment"], true);
    assert_eq!(d["production_environment"], false);
    let statuses: Vec<&Call> = deployments
        .iter()
        .filter(|c| c.path.ends_with("/statuses"))
        .collect();
    let deployment_path = statuses[0].path.clone();
    assert!(statuses.iter().all(|c| c.path == deployment_path));
    let states: Vec<&str> = statuses
        .iter()
        .map(|c| c.body["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.last(), Some(&"success"), "{states:?}");
    let success = &statuses.last().unwrap().body;
    let preview_url = success["environment_url"].as_str().unwrap().to_owned();
    assert!(
        preview_url.starts_with("http://127.0.0.1:"),
        "{preview_url}"
    );
    assert!(
        success["log_url"]
            .as_str()
            .unwrap()
            .starts_with("https://gitops.example/runs/")
    );

    // The comment: created once, then edited; the last body shows both pipelines.
    wait_until("the comment to show both pipelines' ends", || {
        let last = (calls.lock().unwrap().iter().rev())
            .find(|c| c.method == "PATCH" || (c.method == "POST" && c.path.ends_with("/comments")))
            .map(|c| c.body["body"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        last.contains("`pr` passed") && last.contains("`checks` failed")
    });
    let posted = of("POST", "/issues/4/comments");
    assert_eq!(posted.len(), 1, "one comment is created: {posted:?}");
    let edits = of("PATCH", "/repos/o/upstream/issues/comments/");
    assert!(!edits.is_empty());
    let body = edits.last().unwrap().body["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        body.starts_with(&gitops_core::report::tagged_marker(
            b"t0ken-for-tests",
            "comment:o/upstream:4"
        )),
        "{body}"
    );
    assert!(body.contains(&format!("<{preview_url}>")), "{body}");
    assert!(body.contains("| `test` | ❌ failed (exit 3) |"), "{body}");
    assert!(body.contains("| `preview` | ✅ passed |"), "{body}");
    // The failed stage's last 20 lines: line-13 to line-30, the hostile one and the masked
    // secret, in a code block.
    assert!(body.contains("Last 20 log lines of `test`"), "{body}");
    assert!(
        !body.contains("line-12\n") && body.contains("line-13\n"),
        "{body}"
    );
    assert!(body.contains("token=***\n"), "{body}");
    assert!(!body.contains("s3cret-in-the-log"), "{body}");
    assert!(body.contains("```text\n"), "{body}");
    let fenced = body.split("```text\n").nth(1).unwrap();
    assert!(
        fenced
            .split("```")
            .next()
            .unwrap()
            .contains("@admin </details>")
    );

    // Closing the pull request stops the preview: its deployment becomes inactive.
    let (status, reply) = github(
        server.addr,
        "pull_request",
        "d-close",
        &pr("closed", false),
        None,
    );
    assert_eq!(status, 202, "{reply}");
    wait_until("the deployment to be inactive", || {
        of("POST", &deployment_path)
            .iter()
            .any(|c| c.body["state"] == "inactive")
    });
    assert_eq!(
        of("POST", "/repos/o/upstream/deployments")
            .iter()
            .filter(|c| c.path == "/repos/o/upstream/deployments")
            .count(),
        1,
        "the stop made no new deployment"
    );

    // A tag deploys production: a deployment GitHub is told is production, not transient.
    git(&upstream, &["tag", "v1.0.0"]);
    let tag = serde_json::to_vec(&json!({"ref": "refs/tags/v1.0.0",
        "before": "0000000000000000000000000000000000000000", "after": base,
        "created": true, "deleted": false, "forced": false, "sender": {"login": "octo"},
        "repository": {"full_name": "o/upstream"}}))
    .unwrap();
    let (status, reply) = github(server.addr, "push", "d-tag", &tag, None);
    assert_eq!(status, 202, "{reply}");
    let production = || {
        of("POST", "/repos/o/upstream/deployments")
            .into_iter()
            .find(|c| c.body["environment"] == "production")
    };
    wait_until("the production deployment", || production().is_some());
    let d = production().unwrap().body;
    assert_eq!(d["ref"], base.as_str());
    assert_eq!(d["production_environment"], true);
    assert_eq!(d["transient_environment"], false);
    server.stop();
    assert!(
        !server.log().iter().any(|l| l.contains("t0ken-for-tests")),
        "the token reached the log"
    );
}

#[test]
fn a_gitlab_push_gets_running_then_success_on_gitlab_and_nothing_on_github() {
    // The stage waits for `go`, made once `running` has arrived: a run that ended before the
    // sender's first pass would send only its last state (`success`), as it should.
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    let fx = fixture(&format!(
        "version: 1\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n      build: {{ run: \"while [ ! -f {} ]; do sleep 0.05; done\" }}\n",
        go.display()
    ));
    let (gitlab, seen) = github_stand_in();
    let (github_api, github_seen) = github_stand_in();
    let (gitlab_url, github_url) = (format!("http://{gitlab}"), format!("http://{github_api}"));
    let server = Server::start(
        &fx.state,
        &fx.clone,
        &[
            "--allow-unsigned",
            "--repo-name",
            "o/upstream",
            "--gitlab-api-token-env",
            "TEST_GITLAB_TOKEN",
            "--gitlab-url",
            &gitlab_url,
            "--github-token-env",
            "TEST_GITHUB_TOKEN",
            "--github-api-url",
            &github_url,
        ],
        &[
            ("TEST_GITLAB_TOKEN", "gl-t0ken-for-tests"),
            ("TEST_GITHUB_TOKEN", "gh-t0ken-for-tests"),
        ],
    );
    let body = serde_json::to_vec(&json!({"object_kind": "push", "ref": "refs/heads/main",
        "before": fx.before, "after": fx.after, "user_username": "octo",
        "project": {"path_with_namespace": "o/upstream"}}))
    .unwrap();
    let (status, reply) = request(
        server.addr,
        "POST",
        "/webhooks/gitlab",
        &[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Event-UUID", "u-1"),
        ],
        &body,
    );
    assert_eq!(status, 202, "{reply}");
    wait_until("the running status", || !seen.lock().unwrap().is_empty());
    std::fs::write(&go, "").unwrap();
    wait_until("two statuses", || seen.lock().unwrap().len() >= 2);
    let seen = seen.lock().unwrap().clone();
    let path = format!("/api/v4/projects/o%2Fupstream/statuses/{}", fx.after);
    assert!(
        seen.iter().all(|c| c.method == "POST" && c.path == path),
        "{seen:?}"
    );
    let states: Vec<&Value> = seen.iter().map(|c| &c.body["state"]).collect();
    assert_eq!(states, ["running", "success"]);
    assert_eq!(seen[0].body["name"], "gitops/main");
    assert!(seen.iter().all(|c| c.auth == "gl-t0ken-for-tests"));
    assert!(
        github_seen.lock().unwrap().is_empty(),
        "a GitLab run reported to GitHub"
    );
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("gl-t0ken-for-tests") || l.contains("gh-t0ken-for-tests")),
        "a token reached the log"
    );
}

const APP_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../gitops-core/tests/data/test-only-github-app-key.pkcs8.pem"
);
const APP_PUBLIC_KEY: &str =
    include_str!("../../gitops-core/tests/data/test-only-github-app-key.public.pem");

/// The claims of `jwt` once its RS256 signature is checked with the test key's public half.
fn verified_claims(jwt: &str) -> Value {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let (signed, signature) = jwt.rsplit_once('.').unwrap();
    let der: String = (APP_PUBLIC_KEY.lines())
        .filter(|l| !l.starts_with("-----"))
        .collect();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        STANDARD.decode(der).unwrap(),
    )
    .verify(
        signed.as_bytes(),
        &URL_SAFE_NO_PAD.decode(signature).unwrap(),
    )
    .expect("a JWT signed with the App's key");
    let (header, claims) = signed.split_once('.').unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

#[test]
fn a_github_app_gets_its_installation_token_and_reports_with_it() {
    let fx = fixture(
        "version: 1\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      build: { run: \"sleep 1\" }\n",
    );
    let (api, seen) = github_stand_in();
    let api_url = format!("http://{api}");
    let server = Server::start(
        &fx.state,
        &fx.clone,
        &[
            "--allow-unsigned",
            "--repo-name",
            "o/upstream",
            "--github-app-id",
            "12345",
            "--github-app-key-file",
            APP_KEY,
            "--github-api-url",
            &api_url,
        ],
        &[],
    );
    let (status, reply) = github(server.addr, "push", "d-1", &fx.push("a"), None);
    assert_eq!(status, 202, "{reply}");
    wait_until("the lookup, the exchange and two statuses", || {
        seen.lock().unwrap().len() >= 4
    });
    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    let statuses = format!("/repos/o/upstream/statuses/{}", fx.after);
    assert_eq!(
        paths,
        [
            "/repos/o/upstream/installation",
            "/app/installations/7/access_tokens",
            &statuses,
            &statuses
        ]
    );
    for call in &seen[..2] {
        let claims = verified_claims(call.auth.strip_prefix("Bearer ").unwrap());
        assert_eq!(claims["iss"], "12345");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(exp > iat && exp - iat <= 600, "{claims}");
    }
    let states: Vec<&str> = (seen[2..].iter())
        .map(|s| s.body["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "success"]);
    for call in &seen[2..] {
        assert_eq!(call.auth, "Bearer ghs_served");
    }
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("ghs_served") || l.contains("eyJ")),
        "a token reached the log"
    );
}

/// `gitops serve` with `args` after its usual ones: its exit code and standard error.
fn serve_fails(fx: &common::server::Fixture, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["serve", "--listen", "127.0.0.1:0", "--allow-unsigned"])
        .args(["--repo-name", "o/upstream", "--repo"])
        .arg(&fx.clone)
        .arg("--state")
        .arg(&fx.state)
        .args(args)
        .env("TEST_GITHUB_TOKEN", "t0ken")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_app_key_file_or_flags_stop_serve_with_a_clear_error() {
    let fx = fixture("version: 1\npipelines: {}\n");
    let not_rsa = fx.dir.join("not-rsa.pem");
    std::fs::write(
        &not_rsa,
        "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = fx.dir.join("missing.pem");
    for (file, says) in [
        (&missing, "missing.pem: cannot open it"),
        (&not_rsa, "not-rsa.pem: not a usable RSA private key"),
    ] {
        let app = ["--github-app-id", "12345", "--github-app-key-file"];
        let (code, stderr) = serve_fails(&fx, &[&app[..], &[file.to_str().unwrap()]].concat());
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            !stderr.contains("c2VjcmV0"),
            "key material printed: {stderr}"
        );
    }
    let both = [
        "--github-token-env",
        "TEST_GITHUB_TOKEN",
        "--github-app-id",
        "1",
        "--github-app-key-file",
        APP_KEY,
    ];
    let (code, stderr) = serve_fails(&fx, &both);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (code, stderr) = serve_fails(&fx, &["--github-app-id", "1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--github-app-key-file"), "{stderr}");
}

#[test]
fn bitbucket_and_gitea_pushes_get_their_statuses_on_their_own_forge() {
    let fx = fixture(
        "version: 1\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      build: { run: \"sleep 1\" }\n",
    );
    let (bitbucket, bitbucket_seen) = github_stand_in();
    let (gitea, gitea_seen) = github_stand_in();
    let (bitbucket_url, gitea_url) = (format!("http://{bitbucket}/2.0"), format!("http://{gitea}"));
    let server = Server::start(
        &fx.state,
        &fx.clone,
        &[
            "--allow-unsigned",
            "--repo-name",
            "o/upstream",
            "--bitbucket-api-token-env",
            "TEST_BB_TOKEN",
            "--bitbucket-api-url",
            &bitbucket_url,
            "--gitea-api-token-env",
            "TEST_GITEA_TOKEN",
            "--gitea-url",
            &gitea_url,
            "--public-url",
            "https://gitops.example",
        ],
        &[
            ("TEST_BB_TOKEN", "bb-t0ken"),
            ("TEST_GITEA_TOKEN", "gt-t0ken"),
        ],
    );
    let target = |hash: &str| json!({"type": "branch", "name": "main", "target": {"type": "commit", "hash": hash}});
    let push = json!({"actor": {"nickname": "octo"}, "repository": {"full_name": "o/upstream"},
        "push": {"changes": [{"old": target(&fx.before), "new": target(&fx.after),
            "created": false, "closed": false, "forced": false, "truncated": false, "commits": []}]}});
    let (status, reply) = request(
        server.addr,
        "POST",
        "/webhooks/bitbucket",
        &[("X-Event-Key", "repo:push"), ("X-Request-UUID", "bb-1")],
        &serde_json::to_vec(&push).unwrap(),
    );
    assert_eq!(status, 202, "{reply}");
    wait_until("Bitbucket's two statuses", || {
        bitbucket_seen.lock().unwrap().len() >= 2
    });
    let seen = bitbucket_seen.lock().unwrap().clone();
    let path = format!(
        "/2.0/repositories/o/upstream/commit/{}/statuses/build",
        fx.after
    );
    assert!(
        seen.iter()
            .all(|c| c.path == path && c.auth == "Bearer bb-t0ken"),
        "{seen:?}"
    );
    let states: Vec<&Value> = seen.iter().map(|c| &c.body["state"]).collect();
    assert_eq!(states, ["INPROGRESS", "SUCCESSFUL"]);
    assert_eq!(seen[0].body["key"], "gitops-main");
    assert!(
        seen[0].body["url"]
            .as_str()
            .unwrap()
            .starts_with("https://gitops.example/runs/")
    );

    // Gitea: the same push, in GitHub's shape, to another commit's statuses.
    let push = json!({"ref": "refs/heads/main", "before": fx.before, "after": fx.after,
        "repository": {"full_name": "o/upstream"}, "sender": {"login": "octo"}, "commits": []});
    let (status, reply) = request(
        server.addr,
        "POST",
        "/webhooks/gitea",
        &[("X-Gitea-Event", "push"), ("X-Gitea-Delivery", "gt-1")],
        &serde_json::to_vec(&push).unwrap(),
    );
    assert_eq!(status, 202, "{reply}");
    wait_until("Gitea's two statuses", || {
        gitea_seen.lock().unwrap().len() >= 2
    });
    let seen = gitea_seen.lock().unwrap().clone();
    let path = format!("/api/v1/repos/o/upstream/statuses/{}", fx.after);
    assert!(
        seen.iter()
            .all(|c| c.path == path && c.auth == "token gt-t0ken"),
        "{seen:?}"
    );
    let states: Vec<&Value> = seen.iter().map(|c| &c.body["state"]).collect();
    assert_eq!(states, ["pending", "success"]);
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("bb-t0ken") || l.contains("gt-t0ken")),
        "a token reached the log"
    );
}

#[test]
fn updates_made_while_github_is_down_are_sent_after_serve_restarts() {
    let fx = fixture(
        "version: 1\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      build: { run: \"true\" }\n",
    );
    // An address nothing listens on: GitHub is down for the whole run.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = reporting(&fx.state, &fx.clone, addr, &[], &[]);
    let (status, reply) = github(server.addr, "push", "d-down", &fx.push("a"), None);
    assert_eq!(status, 202, "{reply}");
    // The delivery is done once its run ended and its statuses are in the outbox.
    wait_until("the run to end, unaffected", || {
        (server.log().iter()).any(|l| l.contains("delivery done") && l.contains(r#"outcome="ran""#))
    });
    assert!(
        (server.log().iter()).any(|l| l.contains(r#"result="success""#)),
        "{:?}",
        server.log()
    );
    server.stop();
    // GitHub is back; serve starts again on the same state dir and sends what waited.
    let (_, seen) = github_stand_in_on(TcpListener::bind(addr).unwrap());
    let _server = reporting(&fx.state, &fx.clone, addr, &[], &[]);
    wait_until("the statuses, once GitHub is back", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|c| c.body["state"] == "success")
    });
    let states: Vec<Value> = (seen.lock().unwrap().iter())
        .map(|c| c.body["state"].clone())
        .collect();
    // The last state of the status: `pending` was replaced by `success` while it waited.
    assert_eq!(states, ["success"]);
}
