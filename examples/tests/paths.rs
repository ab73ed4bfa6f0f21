//! Files named by a config stay in the checkout (DESIGN.md, "Trust", rule 7), end to end: real
//! repositories that commit symbolic links leading out of the checkout (`site -> /etc`), and
//! FIFOs made by an earlier stage of the run, through `gitops run` with the local, Terraform and
//! Docker backends, and through the engine with the in-memory Kubernetes API. Each is refused
//! with a message naming the path, quickly (nothing blocks on a FIFO or reads `/dev/zero`), and
//! nothing outside the checkout reaches an environment.
//!
//! The Terraform and Docker cases run when `GITOPS_TEST_TERRAFORM=1` / `GITOPS_TEST_DOCKER=1`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{git, text};
use serde_json::json;

/// How long a refused run may take: generous, since the point is that it does not hang.
const BOUND: Duration = Duration::from_secs(10);

/// A repository at `tmp/repo` whose `.gitops.yml` is `config`, with `files` (path, contents)
/// and `links` (path, target) committed; returns it and the push event file for its commit.
fn repo(tmp: &Path, config: &str, files: &[(&str, &str)], links: &[(&str, &str)]) -> PathBuf {
    let dir = tmp.join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    std::fs::write(dir.join(".gitops.yml"), config).unwrap();
    for (path, contents) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    for (path, target) in links {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
    }
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "init"]);
    let sha = git(&dir, &["rev-parse", "HEAD"]);
    let event = json!({"kind": "push", "repo": "o/r", "sha": sha, "ref": "refs/heads/main", "branch": "main",
        "before": null, "after": sha, "created": true, "deleted": false, "forced": false});
    std::fs::write(tmp.join("event.json"), event.to_string()).unwrap();
    dir
}

/// `gitops run` of the repository's push in `tmp`, with its state in `tmp/state`: exit code,
/// stdout and stderr together, and how long it took.
fn run(tmp: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = common::gitops_with_env(
        &[
            "run",
            "--event",
            tmp.join("event.json").to_str().unwrap(),
            "--repo",
            tmp.join("repo").to_str().unwrap(),
            "--state",
            tmp.join("state").to_str().unwrap(),
        ],
        None,
        env,
    );
    let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.code(), output, started.elapsed())
}

/// A pipeline `main` on pushes to main, with `stages` (YAML lines at stage indent) and an
/// environment `web` on `backend`.
fn config(backend: &str, stages: &str) -> String {
    format!(
        "version: 1\nenvironments:\n  web: {{ backend: {backend} }}\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n{stages}"
    )
}

/// Every symbolic link under `dir` (links are not followed), with its target.
fn links_under(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            found.push((path.clone(), std::fs::read_link(&path).unwrap()));
        } else if meta.is_dir() {
            found.extend(links_under(&path));
        }
    }
    found
}

/// Asserts that nothing under the state dir's environments is a link leading to an absolute
/// path or out of its directory, nor a special file.
fn environments_hold_nothing_from_outside(state: &Path) {
    let envs = state.join("environments");
    for (link, target) in links_under(&envs) {
        assert!(
            target.is_relative() && !target.starts_with(".."),
            "{} is a link to {}",
            link.display(),
            target.display()
        );
    }
    let etc_files = walk_files(&envs)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n == "passwd" || n == "hostname")
        })
        .collect::<Vec<_>>();
    assert!(etc_files.is_empty(), "copied from /etc: {etc_files:?}");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        assert!(
            kind.is_dir() || kind.is_file() || kind.is_symlink(),
            "{} is a special file",
            entry.path().display()
        );
        if kind.is_dir() {
            found.extend(walk_files(&entry.path()));
        } else {
            found.push(entry.path());
        }
    }
    found
}

#[test]
fn a_committed_link_to_etc_never_reaches_a_local_release() {
    let deploy = |with: &str| format!("      deploy: {{ deploy: web, with: {with} }}\n");
    let cases = [
        // The named path is the link.
        (
            deploy("{ files: [site] }"),
            vec![("site", "/etc")],
            "`with.files`: \"site\" is a symbolic link to /etc, which leads out of the checkout",
        ),
        // The link is inside a named directory.
        (
            deploy("{ files: [public] }"),
            vec![("public/etc", "/etc")],
            "`with.files`: \"public/etc\" is a symbolic link to /etc, which leads out of the checkout",
        ),
        // The whole checkout, and a relative link that climbs out of it.
        (
            deploy("{}"),
            vec![("public/up", "../../../../../../../../..")],
            "`with.files`: \"public/up\" is a symbolic link to ../../../../../../../../.., which leads out of the checkout",
        ),
        // Through a named path that goes through a link.
        (
            deploy("{ files: [site/passwd] }"),
            vec![("site", "/etc")],
            "`with.files`: \"site/passwd\": \"site\" is a symbolic link to /etc, which leads out of the checkout",
        ),
    ];
    for (stages, links, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        repo(
            tmp.path(),
            &config("local", &stages),
            &[("public/index.html", "hello")],
            &links,
        );
        let (code, output, took) = run(tmp.path(), &[]);
        assert_eq!(code, Some(1), "{stages}: the run fails: {output}");
        assert!(output.contains(want), "{stages}: no {want:?} in:\n{output}");
        assert!(took < BOUND, "took {took:?}");
        environments_hold_nothing_from_outside(&tmp.path().join("state"));
        assert!(
            !tmp.path().join("state/environments/web/release").exists(),
            "{stages}: no release went live"
        );
    }
}

#[test]
fn links_inside_the_checkout_are_deployed() {
    // The control: what stays inside deploys, links kept where they lead inside the release.
    let tmp = tempfile::tempdir().unwrap();
    repo(
        tmp.path(),
        &config(
            "local",
            "      deploy: { deploy: web, with: { files: [site, docs] } }\n",
        ),
        &[("public/index.html", "hello"), ("manual/a.txt", "a")],
        &[
            ("site", "public"),
            ("public/home.html", "index.html"),
            ("docs", "./manual/../manual"),
        ],
    );
    let (code, output, _) = run(tmp.path(), &[]);
    assert_eq!(code, Some(0), "{output}");
    let release = tmp.path().join("state/environments/web/release");
    assert_eq!(
        std::fs::read_to_string(release.join("site/index.html")).unwrap(),
        "hello"
    );
    assert_eq!(
        std::fs::read_link(release.join("site/home.html")).unwrap(),
        Path::new("index.html")
    );
    assert_eq!(
        std::fs::read_to_string(release.join("site/home.html")).unwrap(),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(release.join("docs/a.txt")).unwrap(),
        "a"
    );
    environments_hold_nothing_from_outside(&tmp.path().join("state"));
}

#[test]
fn a_link_to_dev_zero_is_refused_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    repo(
        tmp.path(),
        &config(
            "local",
            "      deploy: { deploy: web, with: { files: [dev] } }\n",
        ),
        &[],
        &[("dev", "/dev/zero")],
    );
    let (code, output, took) = run(tmp.path(), &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(
            "`with.files`: \"dev\" is a symbolic link to /dev/zero, which leads out of the checkout"
        ),
        "{output}"
    );
    assert!(took < BOUND, "took {took:?}");
    environments_hold_nothing_from_outside(&tmp.path().join("state"));
}

#[test]
fn a_fifo_made_by_an_earlier_stage_is_refused_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    repo(
        tmp.path(),
        &config(
            "local",
            "      mk: { run: mkfifo site/pipe }\n      deploy: { needs: mk, deploy: web, with: { files: [site] } }\n",
        ),
        &[("site/index.html", "hello")],
        &[],
    );
    let (code, output, took) = run(tmp.path(), &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("`with.files`: \"site/pipe\" is a FIFO, not a file or directory"),
        "{output}"
    );
    assert!(took < BOUND, "took {took:?}");
    environments_hold_nothing_from_outside(&tmp.path().join("state"));
}

const MAIN_TF: &str = "output \"hello\" { value = \"hi\" }\n";

#[test]
fn terraform_refuses_a_dir_leading_out_and_a_fifo_in_it() {
    if !common::opted_in("GITOPS_TEST_TERRAFORM", "Terraform") {
        return;
    }
    // `dir` is a link to /etc.
    let tmp = tempfile::tempdir().unwrap();
    repo(
        tmp.path(),
        &config(
            "terraform",
            "      plan: { backend: terraform, with: { dir: infra } }\n",
        ),
        &[],
        &[("infra", "/etc")],
    );
    let (code, output, took) = run(tmp.path(), &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(
            "`with.dir`: \"infra\" is a symbolic link to /etc, which leads out of the checkout"
        ),
        "{output}"
    );
    assert!(took < BOUND, "took {took:?}");
    assert!(
        !tmp.path().join("state/terraform/states").exists(),
        "terraform never ran"
    );

    // A `.tf` file in `dir` that is a link out of the checkout.
    let tmp = tempfile::tempdir().unwrap();
    repo(
        tmp.path(),
        &config(
            "terraform",
            "      apply: { deploy: web, with: { dir: infra } }\n",
        ),
        &[("infra/main.tf", MAIN_TF)],
        &[("infra/passwd.tf", "/etc/passwd")],
    );
    let (code, output, _) = run(tmp.path(), &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("`with.dir`: \"infra/passwd.tf\" is a symbolic link to /etc/passwd, which leads out of the checkout"),
        "{output}"
    );
    assert!(!output.contains("root:"), "nothing of /etc/passwd is shown");

    // A FIFO that an earlier stage of the run made in `dir`.
    let tmp = tempfile::tempdir().unwrap();
    repo(
        tmp.path(),
        &config(
            "terraform",
            "      mk: { run: mkfifo infra/x.tf }\n      plan: { needs: mk, backend: terraform, with: { dir: infra } }\n",
        ),
        &[("infra/main.tf", MAIN_TF)],
        &[],
    );
    let (code, output, took) = run(tmp.path(), &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("`with.dir`: \"infra/x.tf\" is a FIFO, not a file or directory"),
        "{output}"
    );
    assert!(took < BOUND, "took {took:?}");
}

#[test]
fn a_docker_build_context_with_a_link_out_is_refused() {
    if !common::opted_in("GITOPS_TEST_DOCKER", "Docker") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    repo(
        tmp.path(),
        &config(
            "docker",
            "      build: { backend: docker, with: { context: app, tag: \"gitops-paths-test:never\" } }\n",
        ),
        &[("app/Dockerfile", "FROM scratch\nCOPY . /\n")],
        &[("app/passwd", "/etc/passwd")],
    );
    let (code, output, took) = run(tmp.path(), &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("`with.context`: \"app/passwd\" is a symbolic link to /etc/passwd, which leads out of the checkout"),
        "{output}"
    );
    assert!(took < BOUND, "took {took:?}");
    let images = std::process::Command::new("docker")
        .args(["images", "-q", "gitops-paths-test"])
        .output()
        .unwrap();
    assert!(text(&images.stdout).trim().is_empty(), "no image was built");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_manifests_leading_out_of_the_checkout_are_refused() {
    use gitops_core::backend::BackendRegistry;
    use gitops_core::engine::{Engine, RunOptions};
    use gitops_core::event::GitEvent;
    use gitops_core::repo::Repository;
    use gitops_core::scheduler::StageResult;
    use gitops_k8s::KubernetesBackend;
    use gitops_k8s::testing::FakeCluster;

    for (manifests, link, want) in [
        (
            "[k8s/app.yaml]",
            ("k8s/app.yaml", "/etc/passwd"),
            "`with.manifests`: \"k8s/app.yaml\" is a symbolic link to /etc/passwd, which leads out of the checkout",
        ),
        (
            "[k8s]",
            ("k8s/x.yaml", "../../../etc/hostname"),
            "`with.manifests`: \"k8s/x.yaml\" is a symbolic link to ../../../etc/hostname, which leads out of the checkout",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let stages =
            format!("      deploy: {{ deploy: web, with: {{ manifests: {manifests} }} }}\n");
        let dir = repo(
            tmp.path(),
            &config("k8s", &stages),
            &[(
                "k8s/ok.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: ok }\n",
            )],
            &[link],
        );
        let cluster = FakeCluster::new();
        let backend = Arc::new(KubernetesBackend::new(cluster.client()));
        let registry = BackendRegistry::new()
            .with_executor("k8s", backend.clone())
            .with_deployer("k8s", backend);
        let engine = Engine::open(tmp.path().join("state"), registry).unwrap();
        let repository = Repository::open(&dir).unwrap();
        let sha = git(&dir, &["rev-parse", "HEAD"]);
        let event = GitEvent::push("o/r", "main", None, &sha);
        let started = Instant::now();
        let handled = tokio::time::timeout(
            BOUND,
            engine.handle(&event, &repository, &RunOptions::default()),
        )
        .await
        .expect("the run does not hang")
        .unwrap();
        assert!(started.elapsed() < BOUND);
        let report = &handled.reports[0];
        let deploy = report.stage("deploy").unwrap();
        match &deploy.result {
            StageResult::Failure { message, .. } => {
                assert!(message.contains(want), "no {want:?} in {message:?}")
            }
            other => panic!("the deploy must fail, it ended {other:?}"),
        }
        assert!(
            cluster.list("/api/v1", "namespaces", None).is_empty(),
            "nothing reached the cluster"
        );
    }
}
