//! Names a platform accepts (container, volume, namespace and label names, workspace and file
//! names), made from run ids, stage ids and environment names: the one character map every
//! backend uses.
//!
//! ```
//! use gitops_core::backend::names::{dns_label, sanitize};
//! assert_eq!(sanitize("preview/pr 7", 63, "-_.", '-'), "preview-pr-7");
//! assert_eq!(dns_label("Run_42/Build--Image", 63, "x"), "run-42-build-image");
//! ```

/// `text` with every character that is not an ASCII letter or digit, nor in `allowed`, replaced
/// by `replacement`; at most `max_len` characters (the result is ASCII whenever `replacement` and
/// `allowed` are, so characters are bytes).
pub fn sanitize(text: &str, max_len: usize, allowed: &str, replacement: char) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || allowed.contains(c) {
                c
            } else {
                replacement
            }
        })
        .take(max_len)
        .collect()
}

/// `text` as a DNS-1123 label (lower-case letters, digits and `-`, starting and ending with a
/// letter or digit, no `--` runs) of at most `max_len` characters; `fallback` when nothing is
/// left. Kubernetes namespaces and object names, and any name Docker accepts.
pub fn dns_label(text: &str, max_len: usize, fallback: &str) -> String {
    let mut out = String::new();
    for c in sanitize(&text.to_ascii_lowercase(), usize::MAX, "", '-').chars() {
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out.truncate(max_len);
    let out = out.trim_matches('-');
    if out.is_empty() {
        fallback.to_owned()
    } else {
        out.to_owned()
    }
}

/// `name` without the characters at either end that are not ASCII letters or digits (a
/// Kubernetes label value must start and end with one).
pub fn trim_to_alphanumeric(name: &str) -> &str {
    name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_character_map_for_every_platform() {
        // Docker names: letters, digits, `_`, `.` and `-`.
        assert_eq!(sanitize("run:1/Build é", 40, "_.-", '-'), "run-1-Build--");
        assert_eq!(sanitize(&"a".repeat(50), 40, "_.-", '-').len(), 40);
        // File keys and label values keep `.`; workspaces do not.
        assert_eq!(sanitize("owner/repo.git", 40, "-_.", '_'), "owner_repo.git");
        assert_eq!(sanitize("preview.pr-7", 90, "-_", '-'), "preview-pr-7");
        assert_eq!(sanitize("", 10, "", '-'), "");
        assert_eq!(trim_to_alphanumeric("_-x.y-_"), "x.y");
    }

    #[test]
    fn dns_labels_are_lower_case_without_runs_of_dashes() {
        assert_eq!(
            dns_label("Run_42/Build--Image", 63, "x"),
            "run-42-build-image"
        );
        assert_eq!(dns_label("---", 63, "x"), "x");
        assert_eq!(dns_label("", 63, "x"), "x");
        assert_eq!(dns_label(&"a".repeat(80), 52, "x").len(), 52);
        assert_eq!(dns_label("abc-def", 4, "x"), "abc", "no dash at the end");
        assert_eq!(dns_label("Ünïcode", 63, "x"), "n-code");
    }
}
