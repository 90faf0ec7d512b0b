//! A small glob matcher: `*` matches any run of characters (never crossing `sep` when one is
//! given), `?` matches one character. No character classes, no escapes: rule values are
//! identities, not file names.

/// Whether `text` matches `pattern`. Runs in O(len(pattern) × len(text)) time and memory
/// proportional to `text`, so a hostile identity cannot make it blow up.
pub(crate) fn matches(pattern: &[u8], text: &[u8], sep: Option<u8>) -> bool {
    // prev[j]: pattern[..i] matches text[..j]
    let mut prev = vec![false; text.len() + 1];
    let mut cur = vec![false; text.len() + 1];
    prev[0] = true;
    for &p in pattern {
        cur[0] = p == b'*' && prev[0];
        for j in 1..=text.len() {
            let c = text[j - 1];
            cur[j] = match p {
                b'*' => prev[j] || (cur[j - 1] && Some(c) != sep),
                b'?' => prev[j - 1] && Some(c) != sep,
                _ => prev[j - 1] && p == c,
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[text.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::matches;

    #[test]
    fn star_and_question() {
        assert!(matches(
            b"spiffe://e.org/ns/*",
            b"spiffe://e.org/ns/prod/sa/x",
            None
        ));
        assert!(!matches(
            b"spiffe://e.org/ns/*",
            b"spiffe://e.org/other",
            None
        ));
        assert!(matches(
            b"*.example.internal",
            b"api.example.internal",
            Some(b'.')
        ));
        assert!(!matches(
            b"*.example.internal",
            b"a.b.example.internal",
            Some(b'.')
        ));
        assert!(!matches(
            b"*.example.internal",
            b"example.internal",
            Some(b'.')
        ));
        assert!(matches(b"a?c", b"abc", None));
        assert!(matches(b"*", b"", None));
        assert!(!matches(b"abc", b"abcd", None));
        assert!(matches(b"a*b*c", b"aXXbYYc", None));
    }
}
