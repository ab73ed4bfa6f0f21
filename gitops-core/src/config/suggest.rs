//! "Did you mean": the known name that an unknown one was probably meant to be.

/// The edit distance between `a` and `b` (Levenshtein).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A word's numeronym: its first letter, how many letters follow up to its last, its last
/// (`kubernetes` is `k8s`), so that a name spelt out finds its usual short form.
fn numeronym(word: &str) -> Option<String> {
    let chars: Vec<char> = word.chars().collect();
    match chars.as_slice() {
        [first, middle @ .., last] if middle.len() >= 2 => {
            Some(format!("{first}{}{last}", middle.len()))
        }
        _ => None,
    }
}

/// The known name closest to `key`: one a typo or two away, or the short form of it (`k8s`
/// for `kubernetes`).
pub(crate) fn suggestion<'s>(key: &str, known: &[&'s str]) -> Option<&'s str> {
    let key = key.to_ascii_lowercase();
    let short = numeronym(&key);
    if let Some(k) = known.iter().find(|k| short.as_deref() == Some(**k)) {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (distance(&key, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < key.len().min(k.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_and_short_forms_find_the_known_name() {
        let known = ["docker", "k8s", "local", "terraform"];
        assert_eq!(suggestion("kubernetes", &known), Some("k8s"));
        assert_eq!(suggestion("Kubernetes", &known), Some("k8s"));
        assert_eq!(suggestion("dokcer", &known), Some("docker"));
        assert_eq!(suggestion("nomad", &known), None);
        assert_eq!(suggestion("k", &known), None);
        assert_eq!(numeronym("i18n"), Some("i2n".to_owned()));
        assert_eq!(numeronym("ab"), None);
    }
}
