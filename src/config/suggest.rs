//! "Did you mean ...?" for misspelt keys and values: the closest candidate by edit distance,
//! when it is close enough to be a likely typo.

/// Levenshtein distance in characters, ignoring ASCII case.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The candidate nearest to `word`, if it differs by at most a third of its length (at least 2
/// edits allowed) and is not simply a different short word.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let allowed = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|&c| (distance(word, c), c))
        .filter(|&(d, c)| d <= allowed && d < c.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("mode", "MODE"), 0);
        assert_eq!(distance("mode_x", "mode"), 2);
    }

    #[test]
    fn suggestions_are_near_misses_only() {
        let keys = ["mode", "size", "checkout_timeout", "connect_timeout"];
        assert_eq!(closest("mode_x", &keys), Some("mode"));
        assert_eq!(closest("checkout_timout", &keys), Some("checkout_timeout"));
        assert_eq!(closest("sise", &keys), Some("size"));
        assert_eq!(closest("listen", &keys), None);
        assert_eq!(closest("x", &keys), None);
        assert_eq!(
            closest("sesion", &["transaction", "session"]),
            Some("session")
        );
    }
}
