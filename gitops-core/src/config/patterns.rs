//! Glob lists for branch and path filters: `main`, `release/*`, `src/**`, and `!` to exclude.

use std::fmt;

use glob::{MatchOptions, Pattern};
use serde::de::Deserializer;
use serde::{Deserialize, Serialize, Serializer};

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    // `*` stays within one path segment; `**` crosses them.
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// One glob, possibly negated with a leading `!`.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    source: String,
    negated: bool,
    pattern: Pattern,
    /// Literal text every match starts and ends with: a cheap test before the full match.
    prefix: String,
    suffix: String,
}

impl Glob {
    /// Compiles a glob.
    pub fn new(source: &str) -> Result<Glob, String> {
        let (negated, body) = match source.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, source),
        };
        if body.is_empty() {
            return Err(format!("empty pattern \"{source}\""));
        }
        let pattern =
            Pattern::new(body).map_err(|e| format!("invalid pattern \"{source}\": {}", e.msg))?;
        let meta = |c: char| matches!(c, '*' | '?' | '[' | ']');
        let prefix = body.find(meta).map_or(body, |i| &body[..i]).to_owned();
        let suffix = body.rfind(meta).map_or(body, |i| &body[i + 1..]).to_owned();
        Ok(Glob {
            source: source.to_owned(),
            negated,
            pattern,
            prefix,
            suffix,
        })
    }
}

impl Glob {
    fn matches(&self, name: &str) -> bool {
        // Without wildcards the prefix is the whole pattern (`main`).
        if self.prefix.len() == self.body_len() {
            return name == self.prefix;
        }
        name.starts_with(&self.prefix)
            && name.ends_with(&self.suffix)
            && self.pattern.matches_with(name, OPTIONS)
    }

    /// The pattern's length without its `!`.
    fn body_len(&self) -> usize {
        self.source.len() - usize::from(self.negated)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::parse_scalar(d, Glob::new)
    }
}

impl Serialize for Glob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// An ordered list of globs: a name matches when the last glob that matches it is not negated.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct Globs(pub Vec<Glob>);

impl<'de> Deserialize<'de> for Globs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::one_or_many(d).map(Globs)
    }
}

impl Globs {
    /// Whether `name` is selected.
    ///
    /// ```
    /// use gitops_core::config::Globs;
    /// let globs: Globs = serde_yaml::from_str(r#"["src/**", "!src/**/*.md"]"#).unwrap();
    /// assert!(globs.matches("src/a/b.rs"));
    /// assert!(!globs.matches("src/README.md"));
    /// assert!(!globs.matches("docs/x.rs"));
    /// ```
    pub fn matches(&self, name: &str) -> bool {
        self.0
            .iter()
            .rev()
            .find(|g| g.matches(name))
            .is_some_and(|g| !g.negated)
    }

    /// Whether any of `names` is selected.
    pub fn matches_any<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> bool {
        names.into_iter().any(|n| self.matches(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(list: &[&str]) -> Globs {
        Globs(list.iter().map(|s| Glob::new(s).unwrap()).collect())
    }

    #[test]
    fn star_stays_in_a_segment_and_double_star_crosses() {
        let g = globs(&["release/*"]);
        assert!(g.matches("release/1.0"));
        assert!(!g.matches("release/1.0/hotfix"));
        assert!(!g.matches("main"));
        let deep = globs(&["src/**"]);
        assert!(deep.matches("src/a/b/c.rs"));
        assert!(deep.matches("src/x"));
        let ex = globs(&["**", "!docs/**", "docs/api/**"]);
        assert!(ex.matches("a.rs"));
        assert!(!ex.matches("docs/guide.md"));
        assert!(ex.matches("docs/api/x.md"));
        assert!(Glob::new("!").is_err());
        let lit = globs(&["main"]);
        assert!(lit.matches("main") && !lit.matches("mainline") && !lit.matches("xmain"));
        let mid = globs(&["a*b*c"]);
        assert!(mid.matches("abc") && mid.matches("aXbYc") && !mid.matches("ab"));
        let class = globs(&["v[0-9].x"]);
        assert!(class.matches("v1.x") && !class.matches("va.x"));
        assert!(Glob::new("a/[").is_err());
    }
}
