//! The `$GITOPS_OUTPUT` file: `key=value` lines, and `key<<DELIM` ... `DELIM` for values that
//! span lines.

use std::collections::BTreeMap;
use std::path::Path;

/// Reads a `$GITOPS_OUTPUT` file: `key=value` lines, and `key<<DELIM` ... `DELIM` blocks for
/// values that span lines.
pub fn read_outputs(path: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let text = std::fs::read(path)?;
    parse(&String::from_utf8_lossy(&text))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub(crate) fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some((key, delim)) = line.split_once("<<").filter(|(k, _)| !k.contains('=')) {
            let mut value = Vec::new();
            let mut closed = false;
            for (_, l) in lines.by_ref() {
                if l == delim {
                    closed = true;
                    break;
                }
                value.push(l);
            }
            if !closed {
                return Err(format!(
                    "line {}: no closing \"{delim}\" for \"{key}\"",
                    n + 1
                ));
            }
            out.insert(key.trim().to_owned(), value.join("\n"));
        } else if let Some((key, value)) = line.split_once('=') {
            if key.trim().is_empty() {
                return Err(format!("line {}: empty key", n + 1));
            }
            out.insert(key.trim().to_owned(), value.to_owned());
        } else {
            return Err(format!(
                "line {}: expected key=value, found \"{line}\"",
                n + 1
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_and_heredocs() {
        let o =
            parse("image=app:1\nurl=http://x/?a=b\nnotes<<EOF\nline 1\nline 2\nEOF\n\n").unwrap();
        assert_eq!(o["image"], "app:1");
        assert_eq!(o["url"], "http://x/?a=b");
        assert_eq!(o["notes"], "line 1\nline 2");
        assert!(
            parse("oops\n")
                .unwrap_err()
                .contains("line 1: expected key=value")
        );
        assert!(
            parse("x<<END\nno end")
                .unwrap_err()
                .contains("no closing \"END\"")
        );
        assert!(parse("=v").is_err());
    }
}
