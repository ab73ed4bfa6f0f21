//! Secret values: a type that cannot be printed by accident, and the masking applied to every
//! text that leaves a run (log lines, outputs, failure messages, records).

use std::fmt;
use std::sync::Arc;

/// A secret value. `Debug` and `Display` print `***`; [`expose`](Secret::expose) is the one way
/// to the value, for the code that hands it to a process or an API.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::from(value.into()))
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Masks the values of a set of secrets in text: every occurrence of a value becomes `***`,
/// longest first so that a secret containing another is masked whole. Cheap to clone.
#[derive(Clone, Default)]
pub struct Masker {
    /// Non-empty values, longest first.
    values: Arc<[Arc<str>]>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Masker({} values)", self.values.len())
    }
}

impl Masker {
    /// A masker of `secrets` (empty values are ignored: they would mask everything).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut values: Vec<Arc<str>> = secrets
            .into_iter()
            .filter(|s| !s.0.is_empty())
            .map(|s| s.0.clone())
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Masker {
            values: values.into(),
        }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_owned();
        self.mask_in_place(&mut out);
        out
    }

    /// Masks `text` in place; true when it held a secret.
    pub fn mask_in_place(&self, text: &mut String) -> bool {
        let mut found = false;
        for v in self.values.iter() {
            if text.contains(&**v) {
                *text = text.replace(&**v, MASK);
                found = true;
            }
        }
        found
    }

    /// Masks every string in a JSON value (keys too).
    pub fn mask_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => {
                self.mask_in_place(s);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.mask_json(v)),
            serde_json::Value::Object(map) => {
                let masked: serde_json::Map<String, serde_json::Value> = std::mem::take(map)
                    .into_iter()
                    .map(|(k, mut v)| {
                        self.mask_json(&mut v);
                        (self.mask(&k), v)
                    })
                    .collect();
                *map = masked;
            }
            _ => {}
        }
    }

    /// Masks every value of a map of strings.
    pub fn mask_values(&self, map: &mut std::collections::BTreeMap<String, String>) {
        if self.is_empty() {
            return;
        }
        for v in map.values_mut() {
            self.mask_in_place(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_and_masks_longest_first() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
        let long = Secret::new("hunter2-long");
        let masker = Masker::new([&s, &long, &Secret::new("")]);
        assert_eq!(
            masker.mask("token=hunter2-long and hunter2"),
            "token=*** and ***"
        );
        let mut json = serde_json::json!({"a": ["x hunter2"], "hunter2": 1, "n": 3});
        masker.mask_json(&mut json);
        assert_eq!(json, serde_json::json!({"a": ["x ***"], "***": 1, "n": 3}));
        assert!(Masker::default().is_empty());
        assert_eq!(Masker::default().mask("hunter2"), "hunter2");
    }
}
