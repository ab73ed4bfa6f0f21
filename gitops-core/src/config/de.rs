//! Field types that check themselves while the YAML is read, so that serde_yaml reports their
//! errors at the right line and column.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::expr::{Expr, Template};

/// The longest duration a config may give (`timeout`, `retry.backoff`, `auto_stop_after`), and
/// the longest a backend takes from its parameters (`ready_timeout`, ...): 7 days. Longer ones
/// are refused rather than overflowing the clock arithmetic that deadlines are made of.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `MAX_DURATION` as a config writes it.
const MAX_DURATION_TEXT: &str = "7d";

/// `source` for an error message: whole when short, else its start and its length, so that a
/// huge value does not make a huge message.
pub(crate) fn excerpt(source: &str) -> String {
    const SHOWN: usize = 60;
    match source.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}... ({} bytes)", &source[..end], source.len()),
        None => source.to_owned(),
    }
}

/// A string field that may hold `${{ }}` expressions. Numbers and booleans are taken as text.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateString {
    /// The text as written.
    pub source: String,
    /// The parsed template.
    pub template: Template,
}

impl<'de> Deserialize<'de> for TemplateString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, |source| {
            let template = Template::parse(source)
                .map_err(|e| format!("{} in \"{}\"", e.message, excerpt(source)))?;
            Ok(TemplateString {
                source: source.to_owned(),
                template,
            })
        })
    }
}

impl Serialize for TemplateString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// An `if:` condition: a bare expression, one wrapped in `${{ }}`, or a boolean.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The expression as written (without `${{ }}`).
    pub source: String,
    /// The parsed expression.
    pub expr: Expr,
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, |raw| {
            let trimmed = raw.trim();
            let source = match trimmed
                .strip_prefix("${{")
                .and_then(|r| r.strip_suffix("}}"))
            {
                Some(inner) if !inner.contains("${{") => inner.trim(),
                _ => trimmed,
            }
            .to_owned();
            let expr = Expr::parse(&source).map_err(|e| {
                format!(
                    "{} (at offset {}) in `if: {}`",
                    e.message,
                    e.offset,
                    excerpt(&source)
                )
            })?;
            Ok(Condition { source, expr })
        })
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Reads a scalar as text (numbers and booleans too) and parses it inside the visitor, so that
/// serde_yaml locates a parse error at the scalar itself.
pub(crate) fn parse_scalar<'de, D, T>(
    d: D,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    d.deserialize_any(ScalarText(parse))
}

struct ScalarText<T>(fn(&str) -> Result<T, String>);

impl<T> ScalarText<T> {
    fn apply<E: de::Error>(&self, text: &str) -> Result<T, E> {
        (self.0)(text).map_err(E::custom)
    }
}

impl<T> Visitor<'_> for ScalarText<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        self.apply(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        self.apply(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.apply(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.apply(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.apply(&v.to_string())
    }
}

/// `needs: build` or `needs: [build, test]`.
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(de::value::StrDeserializer::new(v)).map(|t| vec![t])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// A key that may be present with no value (`pull_request:`), which means "with defaults".
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// Parses `90s`, `10m`, `1h30m`, `2d` or `500ms`, up to [`MAX_DURATION`]. A bare number is
/// refused, with the unit it needs suggested (`5` reads as seconds to some and as
/// milliseconds to others, so the config says which).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let total = parse_any_duration(text)?;
    if total > MAX_DURATION {
        return Err(format!(
            "duration \"{}\" exceeds the longest allowed, {MAX_DURATION_TEXT}",
            excerpt(text)
        ));
    }
    Ok(total)
}

fn parse_any_duration(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration \"{0}\" has no unit: write {0}s for seconds (or ms, m, h, d)",
            excerpt(text)
        ));
    }
    let bad = || {
        format!(
            "invalid duration \"{}\" (expected e.g. 500ms, 90s, 10m, 1h30m)",
            excerpt(text)
        )
    };
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(n.checked_mul(24 * 3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(unit).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats a duration the way config writes it (`1h30m`, `90s` becomes `1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

pub(crate) mod duration {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_scalar(d, parse_duration)
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(crate) mod option {
        use super::*;

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("42"),
            Err("duration \"42\" has no unit: write 42s for seconds (or ms, m, h, d)".to_owned())
        );
        for bad in [
            "",
            "s",
            "10x",
            "1.5s",
            "-3s",
            "m10",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    /// At the limit in every unit, and one step past it.
    #[test]
    fn durations_are_capped_at_seven_days() {
        assert_eq!(MAX_DURATION, Duration::from_secs(604_800));
        for at in ["7d", "168h", "10080m", "604800s", "604800000ms", "6d23h60m"] {
            assert_eq!(parse_duration(at), Ok(MAX_DURATION), "{at}");
        }
        for past in [
            "8d",
            "7d1ms",
            "604801s",
            "604800001ms",
            "18446744073709551615s",
            "999999999999h",
        ] {
            let err = parse_duration(past).unwrap_err();
            assert_eq!(
                err,
                format!("duration \"{past}\" exceeds the longest allowed, 7d"),
                "{past}"
            );
        }
    }

    #[test]
    fn excerpts_keep_messages_short() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(1000);
        let e = excerpt(&long);
        assert!(e.starts_with(&"é".repeat(60)), "{e}");
        assert!(e.ends_with("... (2000 bytes)"), "{e}");
    }
}
