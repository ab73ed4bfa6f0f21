//! The documentation tells the truth about configs: every fenced `yaml` block of the
//! repository's Markdown validates with the `gitops` binary, and the README's "Configuration
//! reference" lists exactly the keys the config's types accept.
//!
//! A block that is deliberately part of a config says so on the line before its fence:
//! `<!-- partial: stage -->` (one stage, checked inside a pipeline after a Docker `build`
//! stage), `<!-- partial: environments -->` (an `environments:` block, checked with a
//! pipeline added), `<!-- policy file -->` (a `--policy` file, checked as one). Every other
//! block must validate as written, as a user would copy it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{gitops, text};

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Markdown files of the repository (build output and fuzzing corpora left out).
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && !["target", "corpus", "artifacts"].contains(&&*name) {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root(), &mut files);
    files.sort();
    files
}

/// A fenced `yaml` block: where it is, the marker before its fence, its text.
struct Block {
    at: String,
    marker: Option<String>,
    text: String,
}

fn yaml_blocks(file: &Path) -> Vec<Block> {
    let source = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = source.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "```yaml" {
            let marker = i
                .checked_sub(1)
                .map(|p| lines[p].trim())
                .filter(|l| l.starts_with("<!--"))
                .map(str::to_owned);
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_start().starts_with("```"))
                .unwrap_or_else(|| panic!("{}:{}: a block never closed", file.display(), i + 1));
            blocks.push(Block {
                at: format!("{}:{}", file.display(), i + 1),
                marker,
                text: lines[i + 1..end].join("\n") + "\n",
            });
            i = end;
        }
        i += 1;
    }
    blocks
}

/// The config a block stands for, per its marker; `None` for a policy file.
fn as_config(block: &Block) -> Option<String> {
    let indented =
        |text: &str, by: &str| -> String { text.lines().map(|l| format!("{by}{l}\n")).collect() };
    match block.marker.as_deref() {
        None => Some(block.text.clone()),
        Some("<!-- policy file -->") => None,
        Some("<!-- partial: environments -->") => Some(format!(
            "version: 1\n{}pipelines:\n  p: {{ on: {{ push: {{}} }}, stages: {{ a: {{ run: x }} }} }}\n",
            block.text
        )),
        Some("<!-- partial: stage -->") => Some(format!(
            "version: 1\nenvironments:\n  preview: {{ per_pull_request: true, backend: docker }}\npipelines:\n  pr:\n    on: {{ pull_request: {{}} }}\n    stages:\n      build: {{ backend: docker, with: {{ dockerfile: Dockerfile }} }}\n{}",
            indented(&block.text, "      ").replacen(":\n", ":\n        needs: build\n", 1)
        )),
        Some(other) => panic!(
            "{}: unknown marker {other} (known: <!-- partial: stage -->, <!-- partial: environments -->, <!-- policy file -->)",
            block.at
        ),
    }
}

#[test]
fn every_yaml_block_of_the_documentation_validates() {
    let files = markdown_files();
    for readme in ["README.md", "examples/README.md"] {
        assert!(
            files.contains(&root().join(readme)),
            "{readme} in {files:?}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut configs, mut policies, mut k8s) = (0, 0, false);
    for file in &files {
        for block in yaml_blocks(file) {
            let path = tmp.path().join(format!("{}.yml", configs + policies));
            match as_config(&block) {
                Some(config) => {
                    configs += 1;
                    k8s |= config.contains("backend: k8s");
                    std::fs::write(&path, &config).unwrap();
                    let out = gitops(&["validate", "--config", path.to_str().unwrap()], None);
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "{}: the block does not validate:\n{config}\n{}",
                        block.at,
                        text(&out.stderr)
                    );
                }
                None => {
                    policies += 1;
                    if let Err(e) = gitops_core::trust::Policy::parse(&block.at, &block.text) {
                        panic!("{}: the policy file does not load:\n{e}", block.at);
                    }
                }
            }
        }
    }
    assert!(configs >= 5, "{configs} configs checked in {files:?}");
    assert!(policies >= 1, "the README's policy file was checked");
    assert!(k8s, "the README's Kubernetes config was checked");
}

/// The keys the README's "Configuration reference" lists, as dotted paths (`<name>` and `<id>`
/// kept).
fn reference_keys() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Configuration reference\n")
        .nth(1)
        .expect("the README has a \"Configuration reference\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l.split('`').next().unwrap_or_default().to_owned())
        .collect()
}

/// The keys the config's types accept at `path` (a dotted path of the reference's), when a
/// map with fixed keys stands there: what serde lists when an unknown key is put in it.
fn accepted_at(path: &str) -> Option<BTreeSet<String>> {
    let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let mut yaml = "{ zz_unknown: 1 }".to_owned();
    for segment in segments.iter().rev() {
        let key = if segment.starts_with('<') {
            "x"
        } else {
            segment
        };
        yaml = format!("{{ {key}: {yaml} }}");
    }
    let err = match gitops_core::config::Config::parse("c.yml", &yaml) {
        Ok(_) => return None,
        Err(e) => e.to_string(),
    };
    let (_, after) = err.split_once("unknown field `zz_unknown`, expected ")?;
    let dotted = segments
        .iter()
        .map(|s| if s.starts_with('<') { "x" } else { s })
        .collect::<Vec<_>>()
        .join(".");
    // The problem is this map's, not one found on the way to it.
    let prefix = if dotted.is_empty() {
        "c.yml:1:".to_owned()
    } else {
        format!(": {dotted}: unknown field")
    };
    assert!(err.contains(&prefix), "{path}: {err}");
    Some(
        after
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every key of every map with fixed keys in `.gitops.yml` is in the reference, and every key
/// of the reference is one that the config accepts where the reference puts it.
#[test]
fn the_configuration_reference_lists_exactly_the_keys_of_the_config() {
    let keys = reference_keys();
    assert!(keys.len() > 40, "{} keys in the reference", keys.len());
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "a key listed twice");
    // Documented children by parent path; the root ("") and every key itself are probed.
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for key in &keys {
        let (parent, child) = key.rsplit_once('.').unwrap_or(("", key));
        documented
            .entry(parent.to_owned())
            .or_default()
            .insert(child.to_owned());
    }
    let mut probed: BTreeSet<String> = documented.keys().cloned().collect();
    probed.extend(keys.iter().cloned());
    let mut maps = 0;
    for path in &probed {
        let Some(accepted) = accepted_at(path) else {
            assert!(
                !documented.contains_key(path),
                "the reference lists keys under {path}, which takes none"
            );
            continue;
        };
        maps += 1;
        let listed = documented.get(path).cloned().unwrap_or_default();
        let missing: Vec<&String> = accepted.difference(&listed).collect();
        let extra: Vec<&String> = listed.difference(&accepted).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "under {:?}: keys the config takes and the reference lacks: {missing:?}; keys the reference lists and the config refuses: {extra:?}",
            if path.is_empty() { "the top" } else { path }
        );
    }
    assert!(maps >= 12, "{maps} maps with fixed keys checked");
}
