//! Small helpers for what the apps print.

/// `n` and `noun`, plural unless one: `1 stage`, `2 stages`, `0 stages`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_every_other_number_plural() {
        assert_eq!(super::count(0, "stage"), "0 stages");
        assert_eq!(super::count(1, "pipeline"), "1 pipeline");
        assert_eq!(super::count(2, "environment"), "2 environments");
    }
}
