//! Image builds: a stage with `with: { dockerfile, context, tag }` builds an image from the
//! checkout. The context is sent as a tar stream honouring `.dockerignore`; build output streams
//! as log lines; the outputs are `image` (the tag) and `image_id`.

use gitops_core::backend::BackendError::InvalidParameters;
use std::path::{Path, PathBuf};

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use gitops_core::backend::{BackendError, Completion, LogStream, StageContext, checkout_path};

use crate::DockerBackend;

/// Whether the stage builds an image rather than running a command.
pub(crate) fn is_build(ctx: &StageContext) -> bool {
    ctx.with.contains_key("dockerfile") || ctx.with.contains_key("context")
}

/// `.dockerignore` rules: patterns, `!` for exceptions, the last matching rule wins; a pattern
/// that matches a directory matches everything in it.
struct Ignore {
    rules: Vec<(glob::Pattern, bool)>,
}

impl Ignore {
    fn read(context: &Path) -> Result<Ignore, BackendError> {
        let text = match std::fs::read_to_string(context.join(".dockerignore")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(BackendError::Failed(format!(
                    "cannot read .dockerignore: {e}"
                )));
            }
        };
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclude, pattern) = match line.strip_prefix('!') {
                Some(p) => (false, p.trim()),
                None => (true, line),
            };
            let pattern = pattern
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/');
            let pattern = glob::Pattern::new(pattern)
                .map_err(|e| InvalidParameters(format!(".dockerignore line {}: {e}", n + 1)))?;
            rules.push((pattern, exclude));
        }
        Ok(Ignore { rules })
    }

    fn excludes(&self, rel: &str) -> bool {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        let mut excluded = false;
        for (pattern, exclude) in &self.rules {
            // The path itself or one of the directories it is in.
            let hit = std::iter::successors(Some(rel), |p| p.rsplit_once('/').map(|(d, _)| d))
                .any(|p| pattern.matches_with(p, options));
            if hit {
                excluded = *exclude;
            }
        }
        excluded
    }
}

/// The build context as a tar archive: every file under `context` that `.dockerignore` keeps
/// (the Dockerfile and `.dockerignore` always go).
fn context_tar(context: &Path, dockerfile: &str) -> Result<Vec<u8>, BackendError> {
    let ignore = Ignore::read(context)?;
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    let fail =
        |e: std::io::Error| BackendError::Failed(format!("cannot pack the build context: {e}"));
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(context.join(&dir))
            .map_err(fail)?
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = dir.join(entry.file_name());
            let Some(name) = rel.to_str() else { continue };
            let always = name == dockerfile || name == ".dockerignore";
            if !always && ignore.excludes(name) {
                continue;
            }
            let kind = entry.file_type().map_err(fail)?;
            if kind.is_dir() {
                stack.push(rel);
            } else {
                tar.append_path_with_name(entry.path(), &rel)
                    .map_err(fail)?;
            }
        }
    }
    tar.into_inner().map_err(fail)
}

/// Builds the image the stage describes.
pub(crate) async fn build(
    backend: &DockerBackend,
    ctx: &StageContext,
) -> Result<Completion, BackendError> {
    let context_rel = checkout_path("context", ctx.param_str("context")?.unwrap_or("."))?;
    let dockerfile = ctx
        .param_str("dockerfile")?
        .unwrap_or("Dockerfile")
        .to_owned();
    checkout_path("dockerfile", &dockerfile)?;
    let context = ctx.run.workdir.join(&context_rel);
    if !context.join(&dockerfile).is_file() {
        return Err(InvalidParameters(format!(
            "`with.dockerfile`: {dockerfile} is not a file in the build context {}",
            context_rel.display()
        )));
    }
    let tag = match ctx.param_str("tag")? {
        Some(t) => t.to_owned(),
        None => {
            let repo = crate::docker_name(&ctx.run.event.repo.to_ascii_lowercase(), 100);
            let version = ctx
                .run
                .event
                .sha
                .clone()
                .unwrap_or_else(|| ctx.run.id.clone());
            format!("gitops-{repo}:{}", &version[..version.len().min(12)])
        }
    };
    let (dir, df) = (context.clone(), dockerfile.clone());
    let archive = tokio::task::spawn_blocking(move || context_tar(&dir, &df))
        .await
        .map_err(|e| BackendError::Failed(format!("packing the build context failed: {e}")))??;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(&dockerfile)
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream =
        backend
            .docker
            .build_image(options, None, Some(bollard::body_full(archive.into())));
    let mut image_id = None;
    loop {
        let step = tokio::select! {
            step = stream.next() => step,
            _ = ctx.cancel.cancelled() => return Err(BackendError::Cancelled),
        };
        let Some(step) = step else { break };
        let step = match step {
            Ok(step) => step,
            // What the build itself reported (a failing step, a missing base image).
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                ctx.log.line(LogStream::Stderr, &error);
                return Ok(Completion::failure(
                    None,
                    format!("building {tag} failed: {}", error.trim()),
                ));
            }
            Err(e) => return Err(BackendError::Failed(format!("building {tag}: {e}"))),
        };
        if let Some(message) = step.error_detail.and_then(|d| d.message) {
            ctx.log.line(LogStream::Stderr, &message);
            return Ok(Completion::failure(
                None,
                format!("building {tag} failed: {}", message.trim()),
            ));
        }
        if let Some(text) = step.stream {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                ctx.log.line(LogStream::Stdout, line);
            }
        }
        if let Some(id) = step.aux.and_then(|a| a.id) {
            image_id = Some(id);
        }
    }
    let mut done = Completion::success().with_output("image", tag);
    if let Some(id) = image_id {
        done = done.with_output("image_id", id);
    }
    Ok(done)
}
