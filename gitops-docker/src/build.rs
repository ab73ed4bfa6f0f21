//! Image builds: a stage with `with: { dockerfile, context, tag }` builds an image from the
//! checkout. The context is sent as a tar stream honouring `.dockerignore`; build output streams
//! as log lines; the outputs are `image` (the tag) and `image_id`.
//!
//! The context is read through [`Checkout`]: a link in it goes into the archive as a link when
//! it leads inside the context, as Docker's own client sends it; one leading out of the context
//! or the checkout, and a FIFO, device or socket, fail the build before anything is sent.

use gitops_core::backend::BackendError::InvalidParameters;
use std::path::Path;

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use gitops_core::backend::paths::{EntryKind, Kind};
use gitops_core::backend::{
    BackendError, Checkout, Completion, LogStream, StageContext, checkout_path,
};

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
    fn read(checkout: &Checkout, context: &Path) -> Result<Ignore, BackendError> {
        let path = context.join(".dockerignore");
        let text = match checkout.find("context", &path)? {
            Some(_) => checkout.read_to_string("context", &path)?,
            None => String::new(),
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

/// The build context as a tar archive: every file and link under `context` (as `with.context`
/// names it; `real` is where it resolved to) that `.dockerignore` keeps (the Dockerfile and
/// `.dockerignore` always go).
fn context_tar(
    checkout: &Checkout,
    context: &Path,
    real: &Path,
    dockerfile: &str,
) -> Result<Vec<u8>, BackendError> {
    let ignore = Ignore::read(checkout, real)?;
    let mut tar = tar::Builder::new(Vec::new());
    let fail = |e: std::io::Error| BackendError::failed_with("cannot pack the build context", e);
    let entries = checkout.walk("context", context, |rel| {
        rel.to_str().is_some_and(|name| {
            name == dockerfile || name == ".dockerignore" || !ignore.excludes(name)
        })
    })?;
    for entry in entries {
        match entry.kind {
            EntryKind::Dir => {}
            EntryKind::File => {
                let mut file = checkout.open_file("context", real.join(&entry.path))?;
                let mut header = tar::Header::new_gnu();
                header.set_metadata(&file.metadata().map_err(fail)?);
                // The size is what was read, should the file change meanwhile.
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut bytes).map_err(fail)?;
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, &entry.path, bytes.as_slice())
                    .map_err(fail)?;
            }
            EntryKind::Symlink { target, .. } => {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, &entry.path, &target)
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
    let checkout = Checkout::open(&ctx.run.workdir)?;
    let context = checkout.resolve("context", &context_rel)?;
    if context.kind != Kind::Dir {
        return Err(InvalidParameters(format!(
            "`with.context`: \"{}\" is a file, not a directory",
            context_rel.display()
        )));
    }
    let is_file = checkout
        .find("dockerfile", context.path.join(&dockerfile))?
        .is_some_and(|r| r.kind == Kind::File);
    if !is_file {
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
    let df = dockerfile.clone();
    let archive = tokio::task::spawn_blocking(move || {
        context_tar(&checkout, &context_rel, &context.path, &df)
    })
    .await
    .map_err(|e| BackendError::failed_with("packing the build context failed", e))??;
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
            _ = ctx.cancelled() => return Err(BackendError::Cancelled),
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
            Err(e) => return Err(BackendError::failed_with(format!("building {tag}"), e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of an archive: path, and the link target of a link.
    fn listing(archive: &[u8]) -> Vec<(String, Option<String>)> {
        tar::Archive::new(archive)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                (path, link)
            })
            .collect()
    }

    #[test]
    fn the_context_keeps_links_inside_and_refuses_links_out_and_fifos() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("app/static")).unwrap();
        std::fs::write(root.join("app/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(root.join("app/static/index.html"), "hi").unwrap();
        std::os::unix::fs::symlink("static/index.html", root.join("app/home.html")).unwrap();
        let checkout = Checkout::open(root).unwrap();
        let archive = context_tar(&checkout, Path::new("app"), Path::new("app"), "Dockerfile");
        assert_eq!(
            listing(&archive.unwrap()),
            vec![
                ("Dockerfile".to_owned(), None),
                ("home.html".to_owned(), Some("static/index.html".to_owned())),
                ("static/index.html".to_owned(), None),
            ]
        );

        std::os::unix::fs::symlink("/etc/passwd", root.join("app/passwd")).unwrap();
        let refused = context_tar(&checkout, Path::new("app"), Path::new("app"), "Dockerfile");
        assert_eq!(
            refused.unwrap_err().to_string(),
            "invalid parameters: `with.context`: \"app/passwd\" is a symbolic link to /etc/passwd, which leads out of the checkout"
        );
        std::fs::remove_file(root.join("app/passwd")).unwrap();

        std::os::unix::fs::symlink("../../secret", root.join("app/static/secret")).unwrap();
        std::fs::write(root.join("secret"), "").unwrap();
        let refused = context_tar(&checkout, Path::new("app"), Path::new("app"), "Dockerfile");
        assert_eq!(
            refused.unwrap_err().to_string(),
            "invalid parameters: `with.context`: \"app/static/secret\" is a symbolic link to ../../secret, which leads out of \"app\""
        );
        std::fs::remove_file(root.join("app/static/secret")).unwrap();

        let fifo = root.join("app/pipe");
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        let refused = context_tar(&checkout, Path::new("app"), Path::new("app"), "Dockerfile");
        assert_eq!(
            refused.unwrap_err().to_string(),
            "invalid parameters: `with.context`: \"app/pipe\" is a FIFO, not a file or directory"
        );
        // What .dockerignore leaves out is not looked at.
        std::fs::write(root.join("app/.dockerignore"), "pipe\n").unwrap();
        assert!(context_tar(&checkout, Path::new("app"), Path::new("app"), "Dockerfile").is_ok());
    }
}
