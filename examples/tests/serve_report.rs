//! `gitops serve --github-token-env` reports the runs of GitHub deliveries to GitHub: a commit
//! status per pipeline, sent to a stand-in of GitHub's REST API on loopback.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use common::server::{Server, fixture, github, wait_until};
use serde_json::Value;

/// A request the stand-in received: its path, `Authorization` header and body.
type Seen = (String, String, Value);

/// A GitHub stand-in answering every request 201 (HTTP/1.1, one request a connection).
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
            record.lock().unwrap().push((path, auth, body));
            let answer = "{\"id\":1}";
            let _ = write!(
                stream,
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
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
