//! `gitops serve --github-token-env` (or `--github-app-id` and `--github-app-key-file`) reports
//! the runs of GitHub deliveries to GitHub: a commit status per pipeline, sent to a stand-in of
//! GitHub's REST API on loopback.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use common::server::{Server, fixture, github, wait_until};
use serde_json::Value;

/// A request the stand-in received: its path, `Authorization` header and body.
type Seen = (String, String, Value);

/// A GitHub stand-in (HTTP/1.1, one request a connection) answering as GitHub does an App's
/// installation lookup (200) and token exchange (201, token `ghs_served`), and 201 to the rest.
fn stand_in() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
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
                    "authorization" => auth = value.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, answer) = if path.ends_with("/installation") {
                ("200 OK", "{\"id\":7}")
            } else if path.ends_with("/access_tokens") {
                (
                    "201 Created",
                    "{\"token\":\"ghs_served\",\"expires_at\":\"2099-01-01T00:00:00Z\"}",
                )
            } else {
                ("201 Created", "{\"id\":1}")
            };
            record.lock().unwrap().push((path, auth, body));
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (addr, seen)
}

#[test]
fn a_pushed_commit_gets_a_pending_then_a_success_status() {
    let fx = fixture(
        "version: 1\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      build: { run: \"sleep 1\" }\n",
    );
    let (api, seen) = stand_in();
    let api_url = format!("http://{api}");
    let server = Server::start(
        &fx.state,
        &fx.clone,
        &[
            "--allow-unsigned",
            "--repo-name",
            "o/upstream",
            "--github-token-env",
            "TEST_GITHUB_TOKEN",
            "--github-api-url",
            &api_url,
            "--public-url",
            "https://gitops.example",
        ],
        &[("TEST_GITHUB_TOKEN", "t0ken-for-tests")],
    );
    let (status, reply) = github(server.addr, "push", "d-1", &fx.push("a"), None);
    assert_eq!(status, 202, "{reply}");
    wait_until("two statuses", || seen.lock().unwrap().len() >= 2);
    let seen = seen.lock().unwrap().clone();
    let states: Vec<&str> = seen
        .iter()
        .map(|s| s.2["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "success"]);
    for (path, auth, body) in &seen {
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
        "version: 1\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      build: { run: \"true\" }\n",
    );
    let (api, seen) = stand_in();
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
    let paths: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
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
    for (_, auth, _) in &seen[..2] {
        let claims = verified_claims(auth.strip_prefix("Bearer ").unwrap());
        assert_eq!(claims["iss"], "12345");
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(exp > iat && exp - iat <= 600, "{claims}");
    }
    let states: Vec<&str> = (seen[2..].iter())
        .map(|s| s.2["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "success"]);
    for (_, auth, _) in &seen[2..] {
        assert_eq!(auth, "Bearer ghs_served");
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
