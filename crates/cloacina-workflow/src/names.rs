//! The one rule for workflow and task names, and for "did you mean" hints. The macros check
//! names with it at compile time and `Workflow::new` at run time, so the two always agree.

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Why `name` is not a valid workflow or task name, or `None` if it is.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 200 characters")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else {
        None
    }
}

/// The closest known name, if it is close enough to be a plausible typo.
pub fn suggest<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    known
        .map(|k| (strsim::damerau_levenshtein(wanted, k), k))
        .filter(|(d, k)| *d <= 2.max(wanted.len().min(k.len()) / 3))
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, k)| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name_problem("fetch_order"), None);
        assert_eq!(name_problem(""), Some("it is empty"));
        assert_eq!(
            name_problem("a b"),
            Some("it contains whitespace or control characters")
        );
        assert_eq!(name_problem("a/b"), Some("it contains '/'"));
        assert_eq!(
            name_problem(&"x".repeat(201)),
            Some("it is longer than 200 characters")
        );
    }

    #[test]
    fn suggestions() {
        let known = ["fetch_order", "check_stock"];
        assert_eq!(
            suggest("fetch_ordr", known.iter().copied()).as_deref(),
            Some("fetch_order")
        );
        assert_eq!(suggest("zzz", known.iter().copied()), None);
    }
}
