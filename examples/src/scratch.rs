//! A throwaway Git repository written with gix (no `git` binary needed), for the demo and the
//! starter apps: commit files, move branches, tags and pull request refs.

use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::object::tree::EntryKind;
use gix::refs::transaction::PreviousValue;

/// A repository on disk that the demo writes commits into.
pub struct ScratchRepo {
    repo: gix::Repository,
    path: PathBuf,
    clock: u64,
}

/// What can go wrong writing the scratch repository.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

impl ScratchRepo {
    /// Creates an empty repository at `path` (which must not hold one yet).
    pub fn init(path: &Path) -> Result<Self, Error> {
        let repo = gix::init(path)?;
        Ok(ScratchRepo {
            repo,
            path: path.to_path_buf(),
            clock: 1_700_000_000,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits `files` (path, content) on top of `parent` (or as a root commit) and points
    /// `refs/heads/<branch>` at it. Files not named keep their content from the parent.
    pub fn commit(
        &mut self,
        branch: &str,
        parent: Option<&str>,
        message: &str,
        files: &[(&str, &str)],
    ) -> Result<String, Error> {
        let parents: Vec<ObjectId> = parent
            .map(|p| ObjectId::from_hex(p.as_bytes()))
            .transpose()?
            .into_iter()
            .collect();
        let base_tree = match parents.first() {
            Some(p) => self.repo.find_commit(*p)?.tree_id()?.detach(),
            None => ObjectId::empty_tree(gix::hash::Kind::Sha1),
        };
        let mut editor = self.repo.edit_tree(base_tree)?;
        for (path, content) in files {
            let blob = self.repo.write_blob(content.as_bytes())?.detach();
            let kind = if path.ends_with(".sh") {
                EntryKind::BlobExecutable
            } else {
                EntryKind::Blob
            };
            editor.upsert(*path, kind, blob)?;
        }
        let tree = editor.write()?.detach();
        self.clock += 60;
        let time = format!("{} +0000", self.clock);
        let sig = gix::actor::SignatureRef {
            name: "gitops demo".into(),
            email: "demo@gitops.invalid".into(),
            time: &time,
        };
        let id = self.repo.commit_as(
            sig,
            sig,
            format!("refs/heads/{branch}").as_str(),
            message,
            tree,
            parents,
        )?;
        Ok(id.to_string())
    }

    /// Writes the files of `refs/heads/<branch>` into the work tree, and an index of them, so
    /// that the repository reads as a checkout of that branch (`git status` clean) and `HEAD`
    /// names it.
    pub fn check_out(&self, branch: &str) -> Result<(), Error> {
        let name = format!("refs/heads/{branch}");
        let commit = self.repo.find_reference(name.as_str())?.peel_to_commit()?;
        gitops_core::repo::Repository::open(&self.path)?
            .checkout(&commit.id.to_string(), &self.path)?;
        let mut index = self.repo.index_from_tree(&commit.tree_id()?)?;
        index.write(Default::default())?;
        std::fs::write(self.repo.git_dir().join("HEAD"), format!("ref: {name}\n"))?;
        Ok(())
    }

    /// Points `name` (a full ref, such as `refs/tags/v1.0.0` or `refs/pull/1/head`) at `sha`.
    pub fn set_ref(&self, name: &str, sha: &str) -> Result<(), Error> {
        let id = ObjectId::from_hex(sha.as_bytes())?;
        self.repo
            .reference(name, id, PreviousValue::Any, "gitops demo")?;
        Ok(())
    }
}
