//! `gitops init`: a first `.gitops.yml`, commented, for the three flows (pull request →
//! preview, main → staging, release tag → production) on one backend.

use std::io::Write;
use std::path::Path;

use gitops_examples::outln;

/// The starter configs, by backend name: each validates as written (a test holds them to it).
pub const STARTERS: &[(&str, &str)] = &[
    ("local", include_str!("init/local.yml")),
    ("docker", include_str!("init/docker.yml")),
    ("k8s", include_str!("init/k8s.yml")),
    ("terraform", include_str!("init/terraform.yml")),
];

/// Writes the starter config for `backend` to `path`, which must not exist yet.
pub fn init(backend: &str, path: &Path) -> Result<(), String> {
    let Some((_, text)) = STARTERS.iter().find(|(name, _)| *name == backend) else {
        let known: Vec<&str> = STARTERS.iter().map(|(name, _)| *name).collect();
        return Err(format!(
            "error: no starter config for backend \"{backend}\" (known: {})",
            known.join(", ")
        ));
    };
    // `create_new`: an existing file is never overwritten, even one made meanwhile.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "error: {} exists already: not overwritten (move it away, or pass --config to write elsewhere)",
                path.display()
            ),
            _ => format!("error: cannot write {}: {e}", path.display()),
        })?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("error: cannot write {}: {e}", path.display()))?;
    outln!(
        "Wrote {}: pull requests → preview, main → staging, release tags → production, on the {backend} backend.",
        path.display()
    );
    outln!(
        "Next: edit it for your repository, check it with `gitops validate --config {}`, commit it.",
        path.display()
    );
    Ok(())
}
