//! A recursive-descent parser: `or := and ('||' and)*`, `and := cmp ('&&' cmp)*`,
//! `cmp := unary (('=='|'!=') unary)?`, `unary := '!' unary | primary`.
//!
//! Every rule returns the depth of what it built (see [`MAX_EXPRESSION_DEPTH`]), and a node
//! deeper than the limit is refused where it is made: a chain of 200,000 `||` fails at its
//! 64th operator instead of building a tree that evaluating (or dropping) would recurse down.

use super::lexer::{Token, tokenize};
use super::{BinaryOp, Expr, ExprError, Function, MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_LEN, Value};

/// An expression and its depth.
type Node = (Expr, usize);

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    depth: usize,
}

pub(super) fn parse(text: &str) -> Result<Expr, ExprError> {
    if text.len() > MAX_EXPRESSION_LEN {
        return Err(ExprError::new(
            0,
            format!(
                "expression too long: {} bytes, more than the {MAX_EXPRESSION_LEN} allowed",
                text.len()
            ),
        ));
    }
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(ExprError::new(0, "empty expression"));
    }
    let mut p = Parser {
        tokens,
        pos: 0,
        end: text.len(),
        depth: 0,
    };
    let (expr, _) = p.or()?;
    if let Some((at, t)) = p.tokens.get(p.pos) {
        return Err(ExprError::new(
            *at,
            format!("unexpected {} after the expression", describe(t)),
        ));
    }
    Ok(expr)
}

fn describe(t: &Token) -> String {
    match t {
        Token::Ident(s) => format!("name \"{s}\""),
        Token::Str(s) => format!("string '{s}'"),
        Token::Number(n) => format!("number {n}"),
        Token::Dot => "'.'".into(),
        Token::Comma => "','".into(),
        Token::LParen => "'('".into(),
        Token::RParen => "')'".into(),
        Token::Not => "'!'".into(),
        Token::Eq => "'=='".into(),
        Token::Ne => "'!='".into(),
        Token::And => "'&&'".into(),
        Token::Or => "'||'".into(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(at, _)| *at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: &Token, what: &str) -> Result<(), ExprError> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    fn unexpected(&self, wanted: &str) -> ExprError {
        match self.tokens.get(self.pos) {
            Some((at, t)) => {
                ExprError::new(*at, format!("expected {wanted}, found {}", describe(t)))
            }
            None => ExprError::new(
                self.end,
                format!("expected {wanted} at the end of the expression"),
            ),
        }
    }

    fn too_deep(at: usize) -> ExprError {
        ExprError::new(
            at,
            format!(
                "expression nested too deeply: more than {MAX_EXPRESSION_DEPTH} levels (each \
                 term of an `||`, `&&` or `==` chain is one, and so is each `!`, call and pair \
                 of parentheses)"
            ),
        )
    }

    /// Parses with one more level of nesting (the parser's own recursion: `!`, parentheses and
    /// call arguments). What is parsed `depth` levels down is at least `depth + 1` deep, so it
    /// is refused before recursing further when that is past the limit.
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        self.depth += 1;
        if self.depth >= MAX_EXPRESSION_DEPTH {
            return Err(Self::too_deep(self.offset()));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// `depth`, for what was found at `at`, unless it is past the limit.
    fn within(at: usize, depth: usize) -> Result<usize, ExprError> {
        if depth > MAX_EXPRESSION_DEPTH {
            Err(Self::too_deep(at))
        } else {
            Ok(depth)
        }
    }

    /// `a op b`, found at `at`, unless it is too deep.
    fn binary(at: usize, op: BinaryOp, (a, da): Node, (b, db): Node) -> Result<Node, ExprError> {
        let depth = Self::within(at, da.max(db) + 1)?;
        Ok((Expr::Binary(op, Box::new(a), Box::new(b)), depth))
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            let at = self.offset();
            self.pos += 1;
            left = Self::binary(at, BinaryOp::Or, left, self.and()?)?;
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let mut left = self.cmp()?;
        while self.peek() == Some(&Token::And) {
            let at = self.offset();
            self.pos += 1;
            left = Self::binary(at, BinaryOp::And, left, self.cmp()?)?;
        }
        Ok(left)
    }

    fn cmp(&mut self) -> Result<Node, ExprError> {
        let left = self.unary()?;
        let at = self.offset();
        let op = match self.peek() {
            Some(Token::Eq) => BinaryOp::Eq,
            Some(Token::Ne) => BinaryOp::Ne,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.unary()?;
        if matches!(self.peek(), Some(Token::Eq | Token::Ne)) {
            return Err(ExprError::new(
                self.offset(),
                "comparisons cannot be chained; use parentheses",
            ));
        }
        Self::binary(at, op, left, right)
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        if self.peek() == Some(&Token::Not) {
            let at = self.offset();
            self.pos += 1;
            return self.nested(|p| {
                let (e, depth) = p.unary()?;
                Ok((Expr::Not(Box::new(e)), Self::within(at, depth + 1)?))
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        let at = self.offset();
        match self.next() {
            Some(Token::LParen) => {
                let (e, depth) = self.nested(|p| p.or())?;
                self.expect(&Token::RParen, "')'")?;
                // A group counts as a level although it makes no node: the parser recursed
                // for it, and the limit stays one number for parsing and for the tree.
                Ok((e, Self::within(at, depth + 1)?))
            }
            Some(Token::Str(s)) => Ok((Expr::Literal(Value::String(s)), 1)),
            Some(Token::Number(n)) => Ok((Expr::Literal(Value::Number(n)), 1)),
            Some(Token::Ident(name)) => self.name(at, name),
            Some(t) => Err(ExprError::new(
                at,
                format!("expected a value, found {}", describe(&t)),
            )),
            None => Err(ExprError::new(
                self.end,
                "expected a value at the end of the expression",
            )),
        }
    }

    fn name(&mut self, at: usize, name: String) -> Result<Node, ExprError> {
        match name.as_str() {
            "true" => return Ok((Expr::Literal(Value::Bool(true)), 1)),
            "false" => return Ok((Expr::Literal(Value::Bool(false)), 1)),
            "null" => return Ok((Expr::Literal(Value::Null), 1)),
            _ => {}
        }
        if self.peek() == Some(&Token::LParen) {
            self.pos += 1;
            let func = Function::from_name(&name)
                .ok_or_else(|| ExprError::new(at, format!("unknown function \"{name}\"")))?;
            let mut args = Vec::new();
            let mut depth = 1;
            if self.peek() != Some(&Token::RParen) {
                loop {
                    let (arg, d) = self.nested(|p| p.or())?;
                    depth = depth.max(d + 1);
                    args.push(arg);
                    if self.peek() == Some(&Token::Comma) {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
            }
            self.expect(&Token::RParen, "',' or ')'")?;
            if args.len() != func.arity() {
                return Err(ExprError::new(
                    at,
                    format!(
                        "{}() takes {} arguments, not {}",
                        name,
                        func.arity(),
                        args.len()
                    ),
                ));
            }
            return Ok((Expr::Call(func, args), Self::within(at, depth)?));
        }
        let mut path = vec![name];
        while self.peek() == Some(&Token::Dot) {
            self.pos += 1;
            match self.next() {
                Some(Token::Ident(part)) => path.push(part),
                _ => {
                    self.pos -= 1;
                    return Err(self.unexpected("a name after '.'"));
                }
            }
        }
        Ok((Expr::Path(path), 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_display() {
        let e = parse("a.b == 'x' || !c.d && contains(e.f, 'y')").unwrap();
        assert_eq!(e.to_string(), "a.b == 'x' || !c.d && contains(e.f, 'y')");
        assert_eq!(parse("(true)").unwrap(), Expr::Literal(Value::Bool(true)));
        for text in [
            "(a || b) && c",
            "a || b && c",
            "!(a == b)",
            "(a == b) == c",
            "a == (b == c)",
            "a && (b && c)",
            "!!a",
        ] {
            let e = parse(text).unwrap();
            assert_eq!(e.to_string(), text, "printing {text}");
            assert_eq!(parse(&e.to_string()).unwrap(), e);
        }
        assert_eq!(
            parse("'it''s'").unwrap(),
            Expr::Literal(Value::String("it's".into()))
        );
        assert_eq!(
            parse("stages.build-image.outputs.tag").unwrap().to_string(),
            "stages.build-image.outputs.tag"
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let cases = [
            ("", 0, "empty expression"),
            ("a ==", 4, "expected a value at the end"),
            ("a == b == c", 7, "cannot be chained"),
            ("(a", 2, "expected ')'"),
            ("'open", 0, "unterminated string"),
            ("a # b", 2, "unexpected character '#'"),
            ("nope()", 0, "unknown function \"nope\""),
            ("contains('a')", 0, "takes 2 arguments, not 1"),
            ("a b", 2, "unexpected name \"b\""),
            ("a.", 2, "a name after '.'"),
        ];
        for (text, offset, msg) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.message.contains(msg), "{text:?}: {err:?}");
            assert_eq!(err.offset, offset, "{text:?}: {err:?}");
        }
        let deep = format!("{}a{}", "(".repeat(500), ")".repeat(500));
        assert!(
            parse(&deep)
                .unwrap_err()
                .message
                .contains("nested too deeply")
        );
        let nots = format!("{}a", "!".repeat(500));
        assert!(parse(&nots).is_err());
    }

    fn depth(e: &Expr) -> usize {
        match e {
            Expr::Literal(_) | Expr::Path(_) => 1,
            Expr::Not(a) => depth(a) + 1,
            Expr::Binary(_, a, b) => depth(a).max(depth(b)) + 1,
            Expr::Call(_, args) => args.iter().map(depth).max().unwrap_or(0) + 1,
        }
    }

    fn chain(terms: usize, op: &str) -> String {
        vec!["event.sha"; terms].join(&format!(" {op} "))
    }

    /// Each shape at the limit parses to a tree that deep; one level more is refused, located.
    #[test]
    fn depth_limit_holds_for_chains_nots_groups_and_calls() {
        let max = MAX_EXPRESSION_DEPTH;
        // (what, makes it n deep, whether it has parentheses: those count but make no node)
        type Shape = (&'static str, Box<dyn Fn(usize) -> String>, bool);
        let shapes: Vec<Shape> = vec![
            ("|| chain", Box::new(|n| chain(n, "||")), false),
            ("&& chain", Box::new(|n| chain(n, "&&")), false),
            ("!", Box::new(|n| format!("{}a", "!".repeat(n - 1))), false),
            (
                "call",
                Box::new(|n| format!("contains('x', {})", chain(n - 1, "||"))),
                false,
            ),
            (
                "parentheses",
                Box::new(|n| format!("{}a{}", "(".repeat(n - 1), ")".repeat(n - 1))),
                true,
            ),
            (
                "group in a chain",
                Box::new(|n| format!("a || ({}) && b", chain(n - 3, "&&"))),
                true,
            ),
            (
                "== of a group",
                Box::new(|n| format!("({}) == b", chain(n - 2, "||"))),
                true,
            ),
        ];
        for (what, make, groups) in shapes {
            let at = make(max);
            let e = parse(&at).unwrap_or_else(|e| panic!("{what} at the limit: {e:?}"));
            if !groups {
                assert_eq!(depth(&e), max, "{what}");
            }
            assert!(depth(&e) <= max, "{what}");
            let past = make(max + 1);
            let err = parse(&past).unwrap_err();
            assert!(
                err.message.contains("nested too deeply") && err.message.contains("64"),
                "{what}: {err:?}"
            );
            assert!(err.offset < past.len(), "{what}: {err:?}");
        }
        // The chain is refused at the operator that makes it one level too deep.
        let err = parse(&chain(max + 1, "||")).unwrap_err();
        assert_eq!(err.offset, chain(max, "||").len() + 1, "{err:?}");
    }

    #[test]
    fn a_chain_of_200000_terms_fails_fast_and_located() {
        let text = chain(200_000, "||");
        let started = std::time::Instant::now();
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("too long"), "{err:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Within the length limit, the depth limit stops it.
        let terms = MAX_EXPRESSION_LEN / " || event.sha".len();
        let err = parse(&chain(terms, "||")).unwrap_err();
        assert!(err.message.contains("nested too deeply"), "{err:?}");
    }

    #[test]
    fn length_limit_at_and_past() {
        let at = format!("'{}'", "x".repeat(MAX_EXPRESSION_LEN - 2));
        assert_eq!(at.len(), MAX_EXPRESSION_LEN);
        assert!(parse(&at).is_ok());
        let past = format!("'{}'", "x".repeat(MAX_EXPRESSION_LEN - 1));
        let err = parse(&past).unwrap_err();
        assert_eq!(err.offset, 0);
        assert_eq!(
            err.message,
            format!(
                "expression too long: {} bytes, more than the {MAX_EXPRESSION_LEN} allowed",
                MAX_EXPRESSION_LEN + 1
            )
        );
    }

    /// A tree built by hand far deeper than the parser allows still drops.
    #[test]
    fn dropping_a_deep_hand_built_expression_does_not_recurse() {
        let mut e = Expr::Literal(Value::Null);
        for i in 0..1_000_000 {
            e = if i % 2 == 0 {
                Expr::Not(Box::new(e))
            } else {
                Expr::Binary(
                    BinaryOp::Or,
                    Box::new(e),
                    Box::new(Expr::Path(vec!["a".into()])),
                )
            };
        }
        let e = Expr::Call(Function::Contains, vec![e, Expr::Literal(Value::Null)]);
        // On a small stack, so that a recursive drop would overflow here rather than pass.
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || drop(e))
            .unwrap()
            .join()
            .unwrap();
    }
}
