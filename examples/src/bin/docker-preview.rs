//! Starter app: a pull request's preview environment served from a container.
//!
//! ```text
//! cargo run -p gitops-examples --bin docker-preview [-- --base-image IMAGE] [--keep]
//! ```
//!
//! It embeds the engine with the Docker backend (`DOCKER_HOST` or the local socket) and walks a
//! pull request through a throwaway repository:
//!
//! 1. opened: a `build` stage builds the site's image from the repository's `Dockerfile`, and a
//!    `deploy: preview` stage runs it as the environment `preview-pr-7`, published on 127.0.0.1;
//!    the app fetches the preview's URL;
//! 2. updated: the new commit's image replaces the preview, which now serves the new page;
//! 3. closed: the engine stops the preview; its containers, network and volumes are gone.
//!
//! The site's image is `FROM` a base image with `httpd` (`--base-image`, default
//! `gitops-starter-busybox`, which the app builds `FROM scratch` from the static busybox of
//! Debian's `busybox-static` when the engine does not have it; no registry is needed). The images
//! the run built (the base image too, when it built it) are removed at the end, and the preview
//! too if anything failed (`--keep` leaves the preview running, and its images, and says how to
//! stop it).

use std::sync::Arc;

use gitops_core::backend::BackendRegistry;
use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::repo::Repository;
use gitops_docker::DockerBackend;
use gitops_examples::scratch::ScratchRepo;

use gitops_examples::starter::{Error, exit, step};

const DEFAULT_BASE: &str = "gitops-starter-busybox:latest";
const SITE_IMAGE: &str = "gitops-starter-site";
const PREVIEW: &str = "preview-pr-7";

/// The repository's pipelines: build and deploy a preview per pull request, stop it on close.
const CONFIG: &str = r#"version: 1
environments:
  preview: { per_pull_request: true, backend: docker }
pipelines:
  preview:
    on: { pull_request: { types: [opened, synchronize, reopened] } }
    stages:
      build:
        backend: docker
        with: { dockerfile: Dockerfile, tag: "gitops-starter-site:${{ event.sha }}" }
      deploy:
        needs: build
        deploy: preview
        with: { image: "${{ stages.build.outputs.image }}", port: 8080, health_path: /index.html }
  preview-closed:
    on: { pull_request: { types: [closed] } }
    stages:
      teardown: { stop: preview }
"#;

/// A pull request's preview environment served from a container (Docker backend).
#[derive(clap::Parser)]
struct Args {
    /// The image the site is built FROM (one with sh and httpd); default: one built FROM
    /// scratch from the host's static busybox.
    #[arg(long, value_name = "IMAGE")]
    base_image: Option<String>,
    /// Leave the preview running at the end.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gitops_examples::output::exit_quietly_on_closed_pipes();
    exit(starter(<Args as clap::Parser>::parse()).await)
}

async fn starter(args: Args) -> Result<(), Error> {
    let docker = DockerBackend::from_env().await?;
    let (base, built_base) = match &args.base_image {
        Some(image) => (image.clone(), false),
        None => (DEFAULT_BASE.to_owned(), base_image(&docker).await?),
    };
    let dir = tempfile::Builder::new()
        .prefix("gitops-docker-preview-")
        .tempdir()?;
    let docker = Arc::new(docker);
    let registry = BackendRegistry::new()
        .with_executor("docker", docker.clone())
        .with_deployer("docker", docker.clone());
    let engine = Engine::open(dir.path().join("state"), registry)?;
    let outcome = walk(&engine, dir.path(), &base).await;
    if outcome.is_err() || !args.keep {
        // Nothing is left running: the preview goes (a no-op when the walk stopped it).
        if engine.environments()?.iter().any(|e| e.current.is_some()) {
            engine.stop_environment(PREVIEW, "docker-preview").await?;
        }
    }
    remove_site_images(&docker).await;
    if built_base && !args.keep {
        remove_image(&docker, DEFAULT_BASE).await;
    }
    if args.keep && outcome.is_ok() {
        println!(
            "\n--keep: {PREVIEW} still runs; remove it with `docker rm -f $(docker ps -aq --filter label=gitops.environment={PREVIEW})`"
        );
    }
    outcome
}

/// The pull request's story on the engine.
async fn walk(engine: &Engine, dir: &std::path::Path, base: &str) -> Result<(), Error> {
    let mut scratch = ScratchRepo::init(&dir.join("repo"))?;
    let dockerfile = format!(
        "FROM {base}\nCOPY site /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let main = scratch.commit(
        "main",
        None,
        "A site",
        &[
            (".gitops.yml", CONFIG),
            ("Dockerfile", &dockerfile),
            ("site/index.html", "<h1>hello</h1>\n"),
        ],
    )?;
    let repo = Repository::open(scratch.path())?;
    let mut options = RunOptions::default();
    options.actor = Some("docker-preview".to_owned());

    let head = scratch.commit(
        "feature/welcome",
        Some(&main),
        "Welcome visitors",
        &[("site/index.html", "<h1>welcome</h1>\n")],
    )?;
    println!("▸ Pull request #7 opened: build the site's image, deploy {PREVIEW}");
    step(engine, &repo, &options, &pr("opened", &head, &main)).await?;
    let url = preview_url(engine)?;
    println!("  {PREVIEW} serves {url}: {}", fetch(&url).await?.trim());

    let head = scratch.commit(
        "feature/welcome",
        Some(&head),
        "Welcome visitors warmly",
        &[("site/index.html", "<h1>welcome, friend</h1>\n")],
    )?;
    println!("▸ Pull request #7 updated: the preview follows");
    step(engine, &repo, &options, &pr("synchronize", &head, &main)).await?;
    let url = preview_url(engine)?;
    println!("  {PREVIEW} serves {url}: {}", fetch(&url).await?.trim());

    println!("▸ Pull request #7 closed: the preview is torn down");
    step(engine, &repo, &options, &pr("closed", &head, &main)).await?;
    match fetch(&url).await {
        Ok(body) => return Err(format!("{url} still answers after the stop: {body}").into()),
        Err(_) => println!("  {url} no longer answers"),
    }
    Ok(())
}

/// The URL the preview's current deployment returned.
fn preview_url(engine: &Engine) -> Result<String, Error> {
    engine
        .environments()?
        .iter()
        .find(|e| e.record.name == PREVIEW)
        .and_then(|e| e.url().map(str::to_owned))
        .ok_or_else(|| format!("{PREVIEW} has no URL").into())
}

fn pr(action: &str, head: &str, base: &str) -> GitEvent {
    GitEvent::pull_request_event(
        "starter/site",
        action,
        7,
        ("feature/welcome", head),
        ("main", base),
    )
}

/// An HTTP GET of `url` (on 127.0.0.1): the body.
async fn fetch(url: &str) -> Result<String, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.split('/').next())
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url} answered no HTTP: {out}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{url} answered {}", head.lines().next().unwrap_or("")).into());
    }
    Ok(body.to_owned())
}

/// Builds [`DEFAULT_BASE`] from the host's static busybox unless the engine has it; whether
/// it built it (and so removes it at the end, unless `--keep`).
async fn base_image(docker: &DockerBackend) -> Result<bool, Error> {
    if docker.client().inspect_image(DEFAULT_BASE).await.is_ok() {
        return Ok(false);
    }
    println!("▸ Building the base image {DEFAULT_BASE} FROM scratch with the host's busybox");
    docker
        .build_busybox_image(DEFAULT_BASE)
        .await
        .map_err(|e| format!("{e}; or pass --base-image IMAGE (an image with sh and httpd)"))?;
    Ok(true)
}

/// Removes the site images this run built (all but the one a kept preview runs).
async fn remove_site_images(docker: &DockerBackend) {
    let filters = std::collections::HashMap::from([(
        "reference".to_owned(),
        vec![format!("{SITE_IMAGE}:*")],
    )]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let Ok(images) = docker.client().list_images(Some(options)).await else {
        return;
    };
    for image in images {
        for tag in image.repo_tags {
            // A kept preview's image is in use: removing it fails, and that is what we want.
            remove_image(docker, &tag).await;
        }
    }
}

/// Removes the image `tag`; one in use stays.
async fn remove_image(docker: &DockerBackend, tag: &str) {
    let _ = docker
        .client()
        .remove_image(
            tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
}
