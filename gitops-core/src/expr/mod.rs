//! The `${{ ... }}` expression language of `env`, `with`, environment names and concurrency
//! groups, and the bare expressions of `if:`.
//!
//! Grammar: literals (`'text'`, `"text"`, numbers, `true`, `false`, `null`), context paths
//! (`event.pr.number`, `env.NAME`, `stages.<id>.outputs.<key>`, `stages.<id>.result`),
//! `== != && || !`, parentheses, and the functions `success()`, `failure()`, `always()`,
//! `cancelled()`, `startsWith(a, b)` and `contains(a, b)`.
//!
//! Expressions are parsed and name-checked when the config loads ([`Expr::check`]), and evaluated
//! against a [`Context`] when the values are known ([`Expr::eval`]). Evaluation is three-valued:
//! what the context cannot tell yet (a stage's outputs, at planning time) is unknown, and `&&`/`||`
//! still decide where one side settles the answer.
//!
//! Expressions come from whoever opens a pull request, so their size is bounded where they are
//! parsed: [`MAX_EXPRESSION_LEN`] bytes of text and [`MAX_EXPRESSION_DEPTH`] levels.

mod eval;
mod lexer;
mod parser;
mod template;

use std::fmt;

pub use eval::{Context, StageStatus, Value, event_value};
pub use template::{Segment, Template, render_json};

/// The deepest expression [`Expr::parse`] accepts. A literal or a name is one level deep, and each
/// operator, `!`, function call and pair of parentheses around it adds one: a chain of N terms
/// joined by `||` (or `&&`) is N deep. Checking, evaluating and printing an expression recurse
/// once per level, so this bounds their stack as well as the parser's.
pub const MAX_EXPRESSION_DEPTH: usize = 64;

/// The longest expression [`Expr::parse`] accepts, in bytes (the text of an `if:`, or inside one
/// `${{ }}`).
pub const MAX_EXPRESSION_LEN: usize = 16 * 1024;

/// The longest template with expressions in it that [`Template::parse`] accepts, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 64 * 1024;

/// A parsed expression.
///
/// One made by [`Expr::parse`] is at most [`MAX_EXPRESSION_DEPTH`] deep; one built by hand should
/// keep to that too, since checking, evaluating and printing it recurse once per level (dropping
/// it does not).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal value.
    Literal(Value),
    /// A dotted context path such as `event.pr.number`.
    Path(Vec<String>),
    /// `!expr`.
    Not(Box<Expr>),
    /// `a op b`.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `name(args)`.
    Call(Function, Vec<Expr>),
}

/// Takes the tree apart with a stack of its own: dropping it recursively would overflow the
/// stack on an expression built by hand deeper than the parser allows.
impl Drop for Expr {
    fn drop(&mut self) {
        fn take_children(e: &mut Expr, into: &mut Vec<Expr>) {
            let mut take = |b: &mut Box<Expr>| {
                into.push(std::mem::replace(&mut **b, Expr::Literal(Value::Null)));
            };
            match e {
                Expr::Not(a) => take(a),
                Expr::Binary(_, a, b) => {
                    take(a);
                    take(b);
                }
                Expr::Call(_, args) => into.append(args),
                Expr::Literal(_) | Expr::Path(_) => {}
            }
        }
        let mut rest = Vec::new();
        take_children(self, &mut rest);
        while let Some(mut e) = rest.pop() {
            take_children(&mut e, &mut rest);
        }
    }
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `&&`
    And,
    /// `||`
    Or,
}

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `success()`: every need succeeded.
    Success,
    /// `failure()`: some need failed.
    Failure,
    /// `always()`: true, whatever happened.
    Always,
    /// `cancelled()`: the run was cancelled.
    Cancelled,
    /// `startsWith(text, prefix)`.
    StartsWith,
    /// `contains(text, part)`.
    Contains,
}

impl Function {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "success" => Self::Success,
            "failure" => Self::Failure,
            "always" => Self::Always,
            "cancelled" => Self::Cancelled,
            "startsWith" => Self::StartsWith,
            "contains" => Self::Contains,
            _ => return None,
        })
    }

    /// The function's name as written.
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Always => "always",
            Self::Cancelled => "cancelled",
            Self::StartsWith => "startsWith",
            Self::Contains => "contains",
        }
    }

    fn arity(self) -> usize {
        match self {
            Self::StartsWith | Self::Contains => 2,
            _ => 0,
        }
    }

    /// Whether this is one of the status functions (`success()`, ...), which only mean
    /// something in `if:`.
    pub fn is_status(self) -> bool {
        self.arity() == 0
    }
}

/// A syntax or name error in an expression, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What is wrong.
    pub message: String,
    /// Byte offset into the expression text.
    pub offset: usize,
}

impl ExprError {
    fn new(offset: usize, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            offset,
        }
    }
}

/// Fields of `event.*` that expressions may name.
pub const EVENT_FIELDS: &[&str] = &[
    "kind",
    "action",
    "ref",
    "branch",
    "sha",
    "tag",
    "version",
    "repo",
    "pr.number",
    "pr.title",
    "pr.head_ref",
    "pr.base_ref",
    "pr.draft",
    "pr.merged",
];

/// What names an expression may use where it stands.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// `stages.<id>` may name these stages (the transitive needs of the current stage).
    pub stages: &'a dyn Fn(&str) -> StageRef,
    /// Status functions (`success()`, ...) are allowed (in `if:` only).
    pub status_functions: bool,
    /// `env.*` is allowed.
    pub env: bool,
}

/// Whether a stage named in `stages.<id>` may be referred to from where the expression stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageRef {
    /// A transitive need: its outputs and result are known when the expression is evaluated.
    Allowed,
    /// A stage of the pipeline that is not a transitive need.
    NotANeed,
    /// No such stage.
    Unknown,
}

impl Expr {
    /// Parses an expression (the text inside `${{ }}` or an `if:`).
    ///
    /// ```
    /// use gitops_core::expr::Expr;
    /// assert!(Expr::parse("event.branch == 'main' && !event.pr.draft").is_ok());
    /// assert!(Expr::parse("event.branch ==").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        parser::parse(text)
    }

    /// Checks every name the expression uses against `scope`.
    pub fn check(&self, scope: &Scope<'_>) -> Result<(), ExprError> {
        check(self, scope)
    }

    /// Whether the expression calls a status function (`success()`, `failure()`, `always()`,
    /// `cancelled()`). An `if:` without one is implicitly `success() && (...)`.
    pub fn uses_status_function(&self) -> bool {
        match self {
            Expr::Call(f, args) => f.is_status() || args.iter().any(Expr::uses_status_function),
            Expr::Not(e) => e.uses_status_function(),
            Expr::Binary(_, a, b) => a.uses_status_function() || b.uses_status_function(),
            Expr::Literal(_) | Expr::Path(_) => false,
        }
    }

    /// The stages whose outputs or result the expression reads.
    pub fn stage_refs(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk_paths(&mut |p| {
            if p.first().map(String::as_str) == Some("stages") {
                if let Some(id) = p.get(1) {
                    out.push(id.as_str());
                }
            }
        });
        out
    }

    fn walk_paths<'a>(&'a self, f: &mut dyn FnMut(&'a [String])) {
        match self {
            Expr::Path(p) => f(p),
            Expr::Not(e) => e.walk_paths(f),
            Expr::Binary(_, a, b) => {
                a.walk_paths(f);
                b.walk_paths(f);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.walk_paths(f)),
            Expr::Literal(_) => {}
        }
    }
}

fn check(expr: &Expr, scope: &Scope<'_>) -> Result<(), ExprError> {
    match expr {
        Expr::Literal(_) => Ok(()),
        Expr::Path(path) => check_path(path, scope),
        Expr::Not(e) => check(e, scope),
        Expr::Binary(_, a, b) => {
            check(a, scope)?;
            check(b, scope)
        }
        Expr::Call(f, args) => {
            if f.is_status() && !scope.status_functions {
                return Err(ExprError::new(
                    0,
                    format!("{}() can only be used in `if:`", f.name()),
                ));
            }
            args.iter().try_for_each(|a| check(a, scope))
        }
    }
}

fn check_path(path: &[String], scope: &Scope<'_>) -> Result<(), ExprError> {
    let joined = path.join(".");
    let rest = &path[1..];
    match path[0].as_str() {
        "event" => {
            let field = rest.join(".");
            if EVENT_FIELDS.contains(&field.as_str()) {
                Ok(())
            } else {
                Err(ExprError::new(
                    0,
                    format!(
                        "unknown name \"{joined}\" (event fields: {})",
                        EVENT_FIELDS.join(", ")
                    ),
                ))
            }
        }
        "env" if !scope.env => Err(ExprError::new(
            0,
            format!("\"{joined}\": env is not available here"),
        )),
        "env" if rest.len() == 1 => Ok(()),
        "env" => Err(ExprError::new(
            0,
            format!("unknown name \"{joined}\" (expected env.<NAME>)"),
        )),
        "stages" => {
            let Some(id) = rest.first() else {
                return Err(ExprError::new(
                    0,
                    "\"stages\" needs a stage id: stages.<id>.outputs.<key>",
                ));
            };
            match (scope.stages)(id) {
                StageRef::Unknown => Err(ExprError::new(
                    0,
                    format!("unknown stage \"{id}\" in \"{joined}\""),
                )),
                StageRef::NotANeed => Err(ExprError::new(
                    0,
                    format!(
                        "\"{joined}\" refers to stage \"{id}\", which this stage does not need (add it to `needs`)"
                    ),
                )),
                StageRef::Allowed => match &rest[1..] {
                    [o, _key] if o == "outputs" => Ok(()),
                    [r] if r == "result" => Ok(()),
                    _ => Err(ExprError::new(
                        0,
                        format!(
                            "unknown name \"{joined}\" (expected stages.{id}.outputs.<key> or stages.{id}.result)"
                        ),
                    )),
                },
            }
        }
        other => Err(ExprError::new(
            0,
            format!("unknown name \"{other}\" in \"{joined}\" (expected event, env or stages)"),
        )),
    }
}

impl Expr {
    /// Binding strength, for printing with no more parentheses than needed.
    fn precedence(&self) -> u8 {
        match self {
            Expr::Binary(BinaryOp::Or, ..) => 1,
            Expr::Binary(BinaryOp::And, ..) => 2,
            Expr::Binary(..) => 3,
            _ => 4,
        }
    }

    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, parens: bool) -> fmt::Result {
        if parens {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

/// Prints the expression in the syntax it is parsed from, with parentheses only where the
/// structure needs them.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(Value::String(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Expr::Literal(Value::Null) => f.write_str("null"),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Path(p) => f.write_str(&p.join(".")),
            Expr::Not(e) => {
                f.write_str("!")?;
                e.fmt_operand(f, e.precedence() < 4)
            }
            Expr::Binary(op, a, b) => {
                let me = self.precedence();
                let symbol = match op {
                    BinaryOp::Eq => "==",
                    BinaryOp::Ne => "!=",
                    BinaryOp::And => "&&",
                    BinaryOp::Or => "||",
                };
                // Left-associative; comparisons do not chain, so both sides of one need
                // parentheses when they are comparisons themselves.
                let left_parens = if me == 3 {
                    a.precedence() <= me
                } else {
                    a.precedence() < me
                };
                a.fmt_operand(f, left_parens)?;
                write!(f, " {symbol} ")?;
                b.fmt_operand(f, b.precedence() <= me)
            }
            Expr::Call(func, args) => {
                write!(f, "{}(", func.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}
