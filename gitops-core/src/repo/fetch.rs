//! Fetching from remotes with gix: a repository's own remote, and local mirrors of remote
//! repositories (every ref of the remote, under the same name, and nothing the remote no
//! longer has).

use std::path::Path;
use std::sync::atomic::AtomicBool;

use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::remote::Direction;

use super::{RepoError, Repository};

impl Repository {
    /// Fetches the branches, tags and pull request heads of remote `name` (`origin`) into
    /// `refs/remotes/<name>/...` and `refs/tags/`, so that the commits events name are here.
    pub fn fetch_remote(&self, name: &str) -> Result<(), RepoError> {
        let Some(url) = self.remote_url(name) else {
            return Err(RepoError::Fetch {
                url: name.to_owned(),
                message: "no such remote".to_owned(),
            });
        };
        let specs = [
            format!("+refs/heads/*:refs/remotes/{name}/*"),
            "+refs/tags/*:refs/tags/*".to_owned(),
            format!("+refs/pull/*:refs/remotes/{name}/pull/*"),
            format!("+refs/merge-requests/*:refs/remotes/{name}/merge-requests/*"),
        ];
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        fetch_into(self, &url, &specs, false)
    }
}

fn fetch_err(url: &str, e: impl std::fmt::Display) -> RepoError {
    RepoError::Fetch {
        url: url.to_owned(),
        message: e.to_string(),
    }
}

/// Brings the mirror at `path` (created when missing) up to date with `url`: every remote ref
/// fetched to the same name, refs the remote deleted deleted here.
pub fn fetch_mirror(url: &str, path: &Path) -> Result<Repository, RepoError> {
    if !path.join("HEAD").exists() {
        std::fs::create_dir_all(path).map_err(|e| fetch_err(url, e))?;
        gix::init_bare(path).map_err(|e| fetch_err(url, e))?;
    }
    let mirror = Repository::open(path)?;
    fetch_into(&mirror, url, &["+refs/*:refs/*"], true)?;
    Ok(mirror)
}

/// Fetches `refspecs` from `url` into `repo`; with `prune`, deletes the refs under `refs/` that
/// the remote does not have (for a mirror, whose refs are all the remote's).
pub fn fetch_into(
    repo: &Repository,
    url: &str,
    refspecs: &[&str],
    prune: bool,
) -> Result<(), RepoError> {
    let local = repo.local();
    let remote = local
        .remote_at(url)
        .map_err(|e| fetch_err(url, e))?
        .with_refspecs(refspecs.iter().copied(), Direction::Fetch)
        .map_err(|e| fetch_err(url, e))?;
    let connection = remote
        .connect(Direction::Fetch)
        .map_err(|e| fetch_err(url, e))?;
    let interrupt = AtomicBool::new(false);
    let outcome = connection
        .prepare_fetch(
            gix::progress::Discard,
            gix::remote::ref_map::Options {
                // The prefix derived from `refs/*` would filter every ref out on the server.
                prefix_from_spec_as_filter_on_remote: false,
                ..Default::default()
            },
        )
        .map_err(|e| fetch_err(url, e))?
        .receive(gix::progress::Discard, &interrupt)
        .map_err(|e| fetch_err(url, e))?;
    if !prune {
        return Ok(());
    }
    // The mirror's HEAD names the remote's default branch, as the remote's own does.
    let remote_head = outcome.ref_map.remote_refs.iter().find_map(|r| match r {
        gix::protocol::handshake::Ref::Symbolic {
            full_ref_name,
            target,
            ..
        } if full_ref_name == "HEAD" => Some(target.clone()),
        _ => None,
    });
    if let Some(target) = remote_head.and_then(|t| gix::refs::FullName::try_from(t).ok()) {
        let edit = RefEdit {
            change: Change::Update {
                log: LogChange::default(),
                expected: PreviousValue::Any,
                new: gix::refs::Target::Symbolic(target),
            },
            name: "HEAD".try_into().map_err(|e| fetch_err(url, e))?,
            deref: false,
        };
        local.edit_reference(edit).map_err(|e| fetch_err(url, e))?;
    }
    let remote_names: std::collections::HashSet<String> = outcome
        .ref_map
        .remote_refs
        .iter()
        .map(|r| r.unpack().0.to_string())
        .collect();
    let gone: Vec<RefEdit> = repo
        .refs()?
        .into_keys()
        .filter(|name| !remote_names.contains(name))
        .filter_map(|name| {
            Some(RefEdit {
                change: Change::Delete {
                    expected: PreviousValue::Any,
                    log: RefLog::AndReference,
                },
                name: name.try_into().ok()?,
                deref: false,
            })
        })
        .collect();
    if !gone.is_empty() {
        local.edit_references(gone).map_err(|e| fetch_err(url, e))?;
    }
    Ok(())
}
