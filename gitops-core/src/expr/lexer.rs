//! Tokens of the expression language.

use super::ExprError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Ident(String),
    Str(String),
    Number(f64),
    Dot,
    Comma,
    LParen,
    RParen,
    Not,
    Eq,
    Ne,
    And,
    Or,
}

pub(super) fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ExprError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let two = bytes.get(i..i + 2);
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'.' => Token::Dot,
            b',' => Token::Comma,
            b'(' => Token::LParen,
            b')' => Token::RParen,
            _ if two == Some(b"==") => Token::Eq,
            _ if two == Some(b"!=") => Token::Ne,
            _ if two == Some(b"&&") => Token::And,
            _ if two == Some(b"||") => Token::Or,
            b'!' => Token::Not,
            b'\'' | b'"' => {
                let (s, end) = string(text, i, c)?;
                tokens.push((start, Token::Str(s)));
                i = end;
                continue;
            }
            b'0'..=b'9' | b'-' => {
                let end = scan(bytes, i + 1, |b| b.is_ascii_digit() || b == b'.');
                let n = text[i..end].parse::<f64>().map_err(|_| {
                    ExprError::new(i, format!("invalid number \"{}\"", &text[i..end]))
                })?;
                tokens.push((start, Token::Number(n)));
                i = end;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let end = scan(bytes, i + 1, |b| {
                    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
                });
                tokens.push((start, Token::Ident(text[i..end].to_owned())));
                i = end;
                continue;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(ExprError::new(i, format!("unexpected character '{ch}'")));
            }
        };
        i += match token {
            Token::Eq | Token::Ne | Token::And | Token::Or => 2,
            _ => 1,
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

fn scan(bytes: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while i < bytes.len() && keep(bytes[i]) {
        i += 1;
    }
    i
}

/// A quoted string; the quote is doubled to escape it (`'it''s'`).
fn string(text: &str, start: usize, quote: u8) -> Result<(String, usize), ExprError> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = start + 1;
    let mut run = i;
    while i < bytes.len() {
        if bytes[i] == quote {
            out.push_str(&text[run..i]);
            if bytes.get(i + 1) == Some(&quote) {
                out.push(quote as char);
                i += 2;
                run = i;
                continue;
            }
            return Ok((out, i + 1));
        }
        i += 1;
    }
    Err(ExprError::new(start, "unterminated string"))
}
