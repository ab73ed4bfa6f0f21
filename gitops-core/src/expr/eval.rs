//! Values, the evaluation context, and three-valued evaluation.

use std::fmt;

use super::{BinaryOp, Expr, Function};
use crate::event::GitEvent;

/// A value in an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent (`null`, an event field the event does not have).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    String(String),
}

impl Value {
    /// Truthiness: `null`, `false`, `0` and `''` are false, everything else true.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0,
            Value::String(s) => !s.is_empty(),
        }
    }

    fn loose_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a)) => {
                b.trim().parse::<f64>().is_ok_and(|b| b == *a)
            }
            _ => self == other,
        }
    }
}

impl fmt::Display for Value {
    /// The text a value becomes in a template: `null` is empty, whole numbers have no decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) => f.write_str(s),
        }
    }
}

/// How the needs of a stage ended, for the status functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageStatus {
    /// Every need succeeded (or was skipped by its own `if:` with `continue`).
    pub needs_succeeded: bool,
    /// Some need failed.
    pub need_failed: bool,
    /// The run was cancelled.
    pub cancelled: bool,
}

/// What an expression can read. `None` means "not known yet", not `null`.
pub trait Context {
    /// The value at a context path (`["event", "pr", "number"]`); `None` when not known yet.
    fn lookup(&self, path: &[String]) -> Option<Value>;

    /// How the stage's needs ended; `None` when not known yet (planning time).
    fn status(&self) -> Option<StageStatus>;
}

/// The value of an `event.*` field (see [`EVENT_FIELDS`](super::EVENT_FIELDS)); `Null` when the
/// event does not have it.
pub fn event_value(event: &GitEvent, field: &[String]) -> Value {
    let text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_owned()));
    let pr = event.pull_request();
    let field: Vec<&str> = field.iter().map(String::as_str).collect();
    match field.as_slice() {
        ["kind"] => Value::String(event.kind().as_str().to_owned()),
        ["action"] => text(event.action()),
        ["ref"] => text(event.git_ref().as_deref()),
        ["branch"] => text(event.branch()),
        ["sha"] => text(event.sha.as_deref()),
        ["tag"] => text(event.tag()),
        ["version"] => event
            .version()
            .map_or(Value::Null, |v| Value::String(v.to_string())),
        ["repo"] => Value::String(event.repo.clone()),
        ["pr", "number"] => pr.map_or(Value::Null, |p| Value::Number(p.number as f64)),
        ["pr", "title"] => text(pr.map(|p| p.title.as_str())),
        ["pr", "head_ref"] => text(pr.map(|p| p.head.git_ref.as_str())),
        ["pr", "base_ref"] => text(pr.map(|p| p.base.git_ref.as_str())),
        ["pr", "draft"] => pr.map_or(Value::Null, |p| Value::Bool(p.draft)),
        ["pr", "merged"] => pr.map_or(Value::Null, |p| Value::Bool(p.merged)),
        _ => Value::Null,
    }
}

impl Expr {
    /// Evaluates the expression; `None` when the answer depends on something `ctx` does not know
    /// yet.
    pub fn eval(&self, ctx: &dyn Context) -> Option<Value> {
        match self {
            Expr::Literal(v) => Some(v.clone()),
            Expr::Path(p) => ctx.lookup(p),
            Expr::Not(e) => e.eval(ctx).map(|v| Value::Bool(!v.truthy())),
            Expr::Binary(BinaryOp::And, a, b) => match (a.eval(ctx), b.eval(ctx)) {
                (Some(x), _) if !x.truthy() => Some(Value::Bool(false)),
                (_, Some(y)) if !y.truthy() => Some(Value::Bool(false)),
                (Some(_), Some(_)) => Some(Value::Bool(true)),
                _ => None,
            },
            Expr::Binary(BinaryOp::Or, a, b) => match (a.eval(ctx), b.eval(ctx)) {
                (Some(x), _) if x.truthy() => Some(Value::Bool(true)),
                (_, Some(y)) if y.truthy() => Some(Value::Bool(true)),
                (Some(_), Some(_)) => Some(Value::Bool(false)),
                _ => None,
            },
            Expr::Binary(op, a, b) => {
                let eq = a.eval(ctx)?.loose_eq(&b.eval(ctx)?);
                Some(Value::Bool(if *op == BinaryOp::Eq { eq } else { !eq }))
            }
            Expr::Call(Function::Always, _) => Some(Value::Bool(true)),
            Expr::Call(Function::Success, _) => ctx
                .status()
                .map(|s| Value::Bool(s.needs_succeeded && !s.cancelled)),
            Expr::Call(Function::Failure, _) => ctx.status().map(|s| Value::Bool(s.need_failed)),
            Expr::Call(Function::Cancelled, _) => ctx.status().map(|s| Value::Bool(s.cancelled)),
            Expr::Call(f, args) => {
                let text = args[0].eval(ctx)?.to_string();
                let part = args[1].eval(ctx)?.to_string();
                Some(Value::Bool(match f {
                    Function::StartsWith => text.starts_with(&part),
                    _ => text.contains(&part),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ctx(Option<StageStatus>);

    impl Context for Ctx {
        fn lookup(&self, path: &[String]) -> Option<Value> {
            match path.join(".").as_str() {
                "event.branch" => Some(Value::String("main".into())),
                "event.pr.number" => Some(Value::Number(7.0)),
                "event.tag" => Some(Value::Null),
                _ => None,
            }
        }
        fn status(&self) -> Option<StageStatus> {
            self.0
        }
    }

    fn eval(text: &str, status: Option<StageStatus>) -> Option<Value> {
        Expr::parse(text).unwrap().eval(&Ctx(status))
    }

    #[test]
    fn three_valued_logic() {
        let t = Some(Value::Bool(true));
        let f = Some(Value::Bool(false));
        assert_eq!(eval("event.branch == 'main'", None), t);
        assert_eq!(eval("event.branch != 'main'", None), f);
        assert_eq!(eval("event.pr.number == '7'", None), t);
        assert_eq!(eval("event.tag == null", None), t);
        assert_eq!(eval("stages.a.outputs.x == 'y'", None), None);
        assert_eq!(eval("event.branch == 'dev' && stages.a.outputs.x", None), f);
        assert_eq!(
            eval("event.branch == 'main' || stages.a.outputs.x", None),
            t
        );
        assert_eq!(
            eval("event.branch == 'main' && stages.a.outputs.x", None),
            None
        );
        assert_eq!(eval("success()", None), None);
        assert_eq!(eval("always()", None), t);
        assert_eq!(eval("startsWith(event.branch, 'ma')", None), t);
        assert_eq!(eval("contains(event.branch, 'x')", None), f);
        assert_eq!(eval("!event.tag", None), t);
        let failed = StageStatus {
            need_failed: true,
            ..Default::default()
        };
        assert_eq!(eval("failure()", Some(failed)), t);
        assert_eq!(eval("success()", Some(failed)), f);
    }

    #[test]
    fn values_render_as_text() {
        assert_eq!(Value::Number(3.0).to_string(), "3");
        assert_eq!(Value::Number(1.5).to_string(), "1.5");
        assert_eq!(Value::Null.to_string(), "");
        assert_eq!(Value::Bool(true).to_string(), "true");
    }
}
