//! Strings with `${{ expression }}` parts.

use super::{Context, Expr, ExprError, MAX_TEMPLATE_LEN};

/// A string with `${{ }}` expressions in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// A part of a [`Template`].
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Text taken as it is.
    Text(String),
    /// An expression, with its source text.
    Expr(Expr, String),
}

impl Template {
    /// Parses a template. Errors carry the byte offset into `text`.
    ///
    /// ```
    /// use gitops_core::expr::Template;
    /// let t = Template::parse("app:${{ event.sha }}").unwrap();
    /// assert_eq!(t.expressions().count(), 1);
    /// assert!(Template::parse("app:${{ event.sha").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Template, ExprError> {
        // A literal costs nothing to render; one with expressions is bounded, since each of
        // them may expand to text of its own.
        if text.len() > MAX_TEMPLATE_LEN && text.contains("${{") {
            return Err(ExprError::new(
                0,
                format!(
                    "template too long: {} bytes with `${{{{ }}}}` in them, more than the \
                     {MAX_TEMPLATE_LEN} allowed",
                    text.len()
                ),
            ));
        }
        let mut segments = Vec::new();
        let mut rest = text;
        let mut base = 0;
        while let Some(open) = rest.find("${{") {
            if open > 0 {
                segments.push(Segment::Text(rest[..open].to_owned()));
            }
            let inner_start = open + 3;
            let close = rest[inner_start..].find("}}").ok_or_else(|| {
                ExprError::new(base + open, "unterminated \"${{\": missing \"}}\"")
            })?;
            let source = &rest[inner_start..inner_start + close];
            let expr = Expr::parse(source).map_err(|e| ExprError {
                offset: base + inner_start + e.offset,
                message: e.message,
            })?;
            segments.push(Segment::Expr(expr, source.trim().to_owned()));
            let consumed = inner_start + close + 2;
            base += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Template { segments })
    }

    /// The template's parts.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The expressions in the template.
    pub fn expressions(&self) -> impl Iterator<Item = &Expr> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Expr(e, _) => Some(e),
            Segment::Text(_) => None,
        })
    }

    /// Whether the template has no expression at all.
    pub fn is_literal(&self) -> bool {
        self.expressions().next().is_none()
    }

    /// Renders the template; `None` when some expression is not known yet.
    pub fn render(&self, ctx: &dyn Context) -> Option<String> {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Expr(e, _) => out.push_str(&e.eval(ctx)?.to_string()),
            }
        }
        Some(out)
    }

    /// Renders what is known and keeps `${{ ... }}` for what is not.
    pub fn render_partial(&self, ctx: &dyn Context) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Expr(e, source) => match e.eval(ctx) {
                    Some(v) => out.push_str(&v.to_string()),
                    None => {
                        out.push_str("${{ ");
                        out.push_str(source);
                        out.push_str(" }}");
                    }
                },
            }
        }
        out
    }
}

/// Renders every string of a JSON value (`with` parameters) as a template with `render`; strings
/// without expressions, or that do not parse, stay as they are. Object keys are never rendered.
pub fn render_json(
    v: &serde_json::Value,
    render: &dyn Fn(&Template) -> String,
) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::String(s) => match Template::parse(s) {
            Ok(t) if !t.is_literal() => J::String(render(&t)),
            _ => v.clone(),
        },
        J::Array(items) => J::Array(items.iter().map(|i| render_json(i, render)).collect()),
        J::Object(map) => J::Object(
            map.iter()
                .map(|(k, i)| (k.clone(), render_json(i, render)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{StageStatus, Value};
    use super::*;

    struct Ctx;
    impl Context for Ctx {
        fn lookup(&self, path: &[String]) -> Option<Value> {
            (path[0] == "event").then(|| Value::String("abc".into()))
        }
        fn status(&self) -> Option<StageStatus> {
            None
        }
    }

    #[test]
    fn renders_known_parts_and_keeps_unknown_ones() {
        let t = Template::parse("a-${{ event.sha }}-${{stages.b.outputs.c}}-z").unwrap();
        assert_eq!(t.render(&Ctx), None);
        assert_eq!(t.render_partial(&Ctx), "a-abc-${{ stages.b.outputs.c }}-z");
        let e = Template::parse("x ${{ event.sha == }}").unwrap_err();
        assert_eq!(e.offset, 19, "{e:?}");
        assert!(Template::parse("plain").unwrap().is_literal());
    }
}
