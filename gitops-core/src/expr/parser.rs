//! A recursive-descent parser: `or := and ('||' and)*`, `and := cmp ('&&' cmp)*`,
//! `cmp := unary (('=='|'!=') unary)?`, `unary := '!' unary | primary`.

use super::lexer::{Token, tokenize};
use super::{BinaryOp, Expr, ExprError, Function, Value};

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    depth: usize,
}

pub(super) fn parse(text: &str) -> Result<Expr, ExprError> {
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
    let expr = p.or()?;
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

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::new(
                self.offset(),
                "expression nested too deeply",
            ));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Expr::Binary(BinaryOp::Or, Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.cmp()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Expr::Binary(BinaryOp::And, Box::new(left), Box::new(self.cmp()?));
        }
        Ok(left)
    }

    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let left = self.unary()?;
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
        Ok(Expr::Binary(op, Box::new(left), Box::new(right)))
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return self.nested(|p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let at = self.offset();
        match self.next() {
            Some(Token::LParen) => {
                let e = self.nested(|p| p.or())?;
                self.expect(&Token::RParen, "')'")?;
                Ok(e)
            }
            Some(Token::Str(s)) => Ok(Expr::Literal(Value::String(s))),
            Some(Token::Number(n)) => Ok(Expr::Literal(Value::Number(n))),
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

    fn name(&mut self, at: usize, name: String) -> Result<Expr, ExprError> {
        match name.as_str() {
            "true" => return Ok(Expr::Literal(Value::Bool(true))),
            "false" => return Ok(Expr::Literal(Value::Bool(false))),
            "null" => return Ok(Expr::Literal(Value::Null)),
            _ => {}
        }
        if self.peek() == Some(&Token::LParen) {
            self.pos += 1;
            let func = Function::from_name(&name)
                .ok_or_else(|| ExprError::new(at, format!("unknown function \"{name}\"")))?;
            let mut args = Vec::new();
            if self.peek() != Some(&Token::RParen) {
                loop {
                    args.push(self.nested(|p| p.or())?);
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
            return Ok(Expr::Call(func, args));
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
        Ok(Expr::Path(path))
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
}
