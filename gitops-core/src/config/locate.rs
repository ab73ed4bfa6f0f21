//! Where each node of a YAML document stands, by path, so that errors found after parsing (an
//! unknown `needs`, a cycle, a bad expression) point at the right line and column.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl From<Marker> for Position {
    fn from(m: Marker) -> Self {
        Position {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// Positions of the nodes of one YAML document, by path (`["pipelines", "main", "stages"]`).
#[derive(Debug, Default)]
pub(crate) struct Locations {
    keys: HashMap<String, Position>,
    values: HashMap<String, Position>,
    /// Keys that appear twice in one mapping: the path and the second occurrence.
    pub(crate) duplicates: Vec<(Vec<String>, Position)>,
}

const SEP: char = '\u{1f}';

fn join(path: &[&str]) -> String {
    path.join(&SEP.to_string())
}

impl Locations {
    /// Indexes `text`; `Err` carries the position and message of a YAML syntax error.
    pub(crate) fn index(text: &str) -> Result<Locations, (Position, String)> {
        let mut recv = Receiver::default();
        Parser::new_from_str(text)
            .load(&mut recv, false)
            .map_err(|e| (Position::from(*e.marker()), e.info().to_owned()))?;
        Ok(recv.out)
    }

    /// Where the key at `path` stands (falling back to its value, then to its nearest parent).
    pub(crate) fn key(&self, path: &[&str]) -> Position {
        self.find(path, true)
    }

    /// Where the value at `path` stands (falling back to its key, then to its nearest parent).
    pub(crate) fn value(&self, path: &[&str]) -> Position {
        self.find(path, false)
    }

    fn find(&self, path: &[&str], key_first: bool) -> Position {
        for len in (0..=path.len()).rev() {
            let k = join(&path[..len]);
            let (first, second) = if key_first {
                (&self.keys, &self.values)
            } else {
                (&self.values, &self.keys)
            };
            if let Some(p) = first.get(&k).or_else(|| second.get(&k)) {
                return *p;
            }
        }
        Position { line: 1, column: 1 }
    }
}

enum Frame {
    Map {
        path: Vec<String>,
        key: Option<String>,
        seen: HashSet<String>,
    },
    Seq {
        path: Vec<String>,
        next: usize,
    },
}

#[derive(Default)]
struct Receiver {
    stack: Vec<Frame>,
    out: Locations,
}

impl Receiver {
    /// The path of the node that starts now; `None` when it is a mapping key.
    fn place(&mut self, ev: &Event, mark: Marker) -> Option<Vec<String>> {
        match self.stack.last_mut() {
            None => Some(Vec::new()),
            Some(Frame::Seq { path, next }) => {
                let mut p = path.clone();
                p.push(next.to_string());
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, seen }) => match key.take() {
                Some(k) => {
                    let mut p = path.clone();
                    p.push(k);
                    Some(p)
                }
                None => {
                    let name = match ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => "?".to_owned(),
                    };
                    let mut p = path.clone();
                    p.push(name.clone());
                    let refs: Vec<&str> = p.iter().map(String::as_str).collect();
                    if !seen.insert(name.clone()) {
                        self.out.duplicates.push((p.clone(), mark.into()));
                    } else {
                        self.out.keys.insert(join(&refs), mark.into());
                    }
                    // A block mapping's start is reported after its first key: the key is
                    // where the mapping begins.
                    let here = Position::from(mark);
                    if let Some(v) = self.out.values.get_mut(&join(&refs[..refs.len() - 1])) {
                        if (here.line, here.column) < (v.line, v.column) {
                            *v = here;
                        }
                    }
                    *key = Some(name);
                    None
                }
            },
        }
    }

    fn record(&mut self, path: &[String], mark: Marker) {
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        self.out.values.entry(join(&refs)).or_insert(mark.into());
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match &ev {
            Event::Scalar(..) | Event::Alias(_) => {
                if let Some(path) = self.place(&ev, mark) {
                    self.record(&path, mark);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex key (a mapping used as a key) is indexed under "?".
                let path = self
                    .place(&ev, mark)
                    .unwrap_or_else(|| vec!["?".to_owned()]);
                self.record(&path, mark);
                self.stack.push(match ev {
                    Event::MappingStart(..) => Frame::Map {
                        path,
                        key: None,
                        seen: HashSet::new(),
                    },
                    _ => Frame::Seq { path, next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_values_and_duplicates() {
        let text = "a:\n  b: [x, y]\n  c:\n    - d: 1\n  b: 2\n";
        let loc = Locations::index(text).unwrap();
        assert_eq!(loc.key(&["a", "b"]), Position { line: 2, column: 3 });
        assert_eq!(
            loc.value(&["a", "b", "1"]),
            Position {
                line: 2,
                column: 10
            }
        );
        assert_eq!(
            loc.key(&["a", "c", "0", "d"]),
            Position { line: 4, column: 7 }
        );
        assert_eq!(
            loc.value(&["a", "c", "0", "nope"]),
            Position { line: 4, column: 7 }
        );
        assert_eq!(
            loc.duplicates,
            vec![(
                vec!["a".to_owned(), "b".to_owned()],
                Position { line: 5, column: 3 }
            )]
        );
        let (pos, msg) = Locations::index("a: [b\n").unwrap_err();
        assert!(pos.line >= 1 && !msg.is_empty());
    }
}
