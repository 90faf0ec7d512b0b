//! twoway-glob: the one wildcard matcher of twoway, a leaf crate with no dependency on the
//! rest of the workspace, so that every crate that matches names can use it.
//!
//! It serves the name policy of the CA (`twoway-pki`), the inventory's SAN filter
//! (`twoway-store`, reachable from `GET /v1/certificates?san=`) and the proxy's identity
//! rules (`twoway-tls`). Each caller picks [`Options`] to keep the semantics it documents:
//!
//! | caller | separator | ASCII case | classes |
//! |---|---|---|---|
//! | name policy, DNS entries | `.` (`*` stays in a label) | exact (both sides lower-case) | yes |
//! | name policy, URI and e-mail entries | none (`*` crosses `/`) | exact | yes |
//! | inventory SAN filter (`cert list --san`, `?san=`) | none | ignored | no |
//! | proxy rules, `dns:` | `.` | exact (both sides lower-case) | no |
//! | proxy rules, `uri:`, `ip:`, `cn:`, `ou:` | none | exact | no |
//!
//! Syntax: `*` matches any run of characters (possibly empty), `?` exactly one character,
//! and with [`Options::classes`] `[abc]`, `[a-z]` and `[!a-z]` (or `[^a-z]`) one character
//! from or not from a set (a `]` right after `[` or `[!` is a member). Every other character
//! matches itself. No wildcard and no class ever matches the separator: only the same
//! character written in the pattern does. There are no escapes and no alternatives (`{a,b}`):
//! rule values are identities, not file names.
//!
//! Complexity: compiling is linear in the pattern. Matching runs in
//! O(len(pattern) × len(text)) time in the worst case, with no recursion and no allocation:
//! the last `*` seen is the only backtracking point (the classic two-pointer algorithm,
//! which is exact for `*` with single-character tokens), so a hostile pattern such as
//! `*a*a*a*a…b` costs at most one pass of the text per pattern token, never an exponential
//! search. Patterns with one or two stars, the usual kind, match in about one pass.
//!
//! ```
//! use twoway_glob::{Glob, Options};
//! let dns = Glob::new("*.example.internal", Options::new().separator('.')).unwrap();
//! assert!(dns.is_match("api.example.internal"));
//! assert!(!dns.is_match("a.b.example.internal"));
//! assert!(twoway_glob::is_match("spiffe://e.org/*", "spiffe://e.org/ns/a", Options::new()));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

/// How a pattern is read and matched. The default: no separator, case matters, no classes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    separator: Option<char>,
    ignore_ascii_case: bool,
    classes: bool,
}

impl Options {
    /// No separator, exact case, `[` an ordinary character.
    pub const fn new() -> Self {
        Options {
            separator: None,
            ignore_ascii_case: false,
            classes: false,
        }
    }

    /// `*`, `?` and classes never match `sep`; only `sep` written in the pattern does
    /// (`.` for DNS names: `*.example.internal` does not match `a.b.example.internal`).
    pub const fn separator(mut self, sep: char) -> Self {
        self.separator = Some(sep);
        self
    }

    /// ASCII letters match whatever their case; other characters match exactly.
    pub const fn ignore_ascii_case(mut self) -> Self {
        self.ignore_ascii_case = true;
        self
    }

    /// Read `[…]` as a character class instead of literal characters.
    pub const fn classes(mut self) -> Self {
        self.classes = true;
        self
    }
}

/// Why a pattern does not compile (only patterns with classes can fail).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `[` opens a class that no `]` closes.
    #[error("the `[` at character {0} opens a character class that is never closed: add `]`")]
    UnclosedClass(usize),
    /// A class range runs backwards, such as `[z-a]`.
    #[error("the range `{0}-{1}` in a character class runs backwards: write `{1}-{0}`")]
    BackwardRange(char, char),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    /// Any run of characters (consecutive stars are folded into one).
    Star,
    /// One character.
    Any,
    /// This character.
    Lit(char),
    /// One character in (or, negated, not in) these inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    opts: Options,
    toks: Vec<Tok>,
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl Glob {
    /// Compiles `pattern`. Fails only on a malformed class, and only with
    /// [`Options::classes`].
    pub fn new(pattern: &str, opts: Options) -> Result<Self, Error> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                    i += 1;
                }
                '?' => {
                    toks.push(Tok::Any);
                    i += 1;
                }
                '[' if opts.classes => {
                    let (tok, next) = parse_class(&chars, i)?;
                    toks.push(tok);
                    i = next;
                }
                c => {
                    toks.push(Tok::Lit(c));
                    i += 1;
                }
            }
        }
        Ok(Glob {
            pattern: pattern.to_owned(),
            opts,
            toks,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern has no wildcard and no class (it matches one text only, up to
    /// case).
    pub fn is_literal(&self) -> bool {
        self.toks.iter().all(|t| matches!(t, Tok::Lit(_)))
    }

    /// Whether `text` matches the whole pattern. See the crate docs for the cost.
    pub fn is_match(&self, text: &str) -> bool {
        let Some(sep) = self.opts.separator else {
            return match_run(&self.toks, text, self.opts);
        };
        // Only a literal separator matches a separator, so the i-th separator of the
        // pattern meets the i-th of the text: match the pieces between them one by one.
        let is_sep = |t: &Tok| *t == Tok::Lit(sep);
        let mut texts = text.split(sep);
        for run in self.toks.split(is_sep) {
            match texts.next() {
                Some(piece) if match_run(run, piece, self.opts) => {}
                _ => return false,
            }
        }
        texts.next().is_none()
    }
}

/// Compiles and matches at once. A pattern that does not compile matches nothing.
pub fn is_match(pattern: &str, text: &str, opts: Options) -> bool {
    Glob::new(pattern, opts).is_ok_and(|g| g.is_match(text))
}

/// Reads the class that opens at `chars[open]` (a `[`); returns it and the index after
/// its `]`.
fn parse_class(chars: &[char], open: usize) -> Result<(Tok, usize), Error> {
    let unclosed = Error::UnclosedClass(open + 1);
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let &c = chars.get(i).ok_or_else(|| unclosed.clone())?;
        if c == ']' && !first {
            return Ok((Tok::Class { negated, ranges }, i + 1));
        }
        first = false;
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                if hi < c {
                    return Err(Error::BackwardRange(c, hi));
                }
                ranges.push((c, hi));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

impl Tok {
    /// Whether this single-character token matches `c` (never called on a star).
    fn matches(&self, c: char, opts: Options) -> bool {
        match self {
            Tok::Star | Tok::Any => true,
            Tok::Lit(l) => *l == c || (opts.ignore_ascii_case && l.eq_ignore_ascii_case(&c)),
            Tok::Class { negated, ranges } => {
                let has = |c: char| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                let hit = has(c)
                    || (opts.ignore_ascii_case
                        && (has(c.to_ascii_lowercase()) || has(c.to_ascii_uppercase())));
                hit != *negated
            }
        }
    }
}

/// Matches a run of tokens (with no separator in it) against a text (with none either).
///
/// The two-pointer algorithm: walk both; at a star, remember where it is and let it take
/// nothing; on a mismatch, go back to the last star and let it take one more character.
/// An earlier star never needs to take more, since the last one can take anything an
/// earlier one could. Each step moves the text pointer forward or the star's end forward,
/// and between two moves of the star's end the pattern pointer moves at most
/// `len(pattern)` times: O(len(pattern) × len(text)).
fn match_run(toks: &[Tok], text: &str, opts: Options) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    // (pattern index after the last star, text index where that star's run ends)
    let mut star: Option<(usize, usize)> = None;
    loop {
        if toks.get(pi) == Some(&Tok::Star) {
            if pi + 1 == toks.len() {
                return true;
            }
            pi += 1;
            star = Some((pi, ti));
            continue;
        }
        let next = text[ti..].chars().next();
        match (toks.get(pi), next) {
            (None, None) => return true,
            (Some(tok), Some(c)) if tok.matches(c, opts) => {
                pi += 1;
                ti += c.len_utf8();
                continue;
            }
            _ => {}
        }
        let Some((after_star, end)) = star else {
            return false;
        };
        let Some(c) = text[end..].chars().next() else {
            return false;
        };
        let end = end + c.len_utf8();
        star = Some((after_star, end));
        pi = after_star;
        ti = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        is_match(p, t, Options::new())
    }

    #[test]
    fn stars_and_questions() {
        assert!(m("spiffe://e.org/ns/*", "spiffe://e.org/ns/prod/sa/x"));
        assert!(!m("spiffe://e.org/ns/*", "spiffe://e.org/other"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*", ""));
        assert!(m("**", "abc"));
        assert!(!m("", "a"));
        assert!(m("", ""));
        assert!(!m("abc", "abcd"));
        assert!(!m("abcd", "abc"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("*abc", "ababc"));
        assert!(m("a*bc*d", "abcxbcyd"));
        assert!(!m("a*bc*d", "abcxbcy"));
        assert!(m("*?", "x"));
        assert!(!m("*?", ""));
        assert!(m("[ab]", "[ab]"), "without classes `[` is literal");
        // one character, not one byte
        assert!(m("a?b", "aéb"));
        assert!(m("*é", "xxé"));
    }

    #[test]
    fn case() {
        assert!(!m("API.example", "api.example"));
        let ci = Options::new().ignore_ascii_case();
        assert!(is_match("API.*", "api.example", ci));
        assert!(is_match(
            "DNS:*.EXAMPLE.internal",
            "dns:a.example.INTERNAL",
            ci
        ));
        assert!(!is_match("É", "é", ci), "only ASCII folds");
    }

    #[test]
    fn separator() {
        let dns = Options::new().separator('.');
        assert!(is_match("*.example.internal", "api.example.internal", dns));
        assert!(!is_match("*.example.internal", "a.b.example.internal", dns));
        assert!(!is_match("*.example.internal", "example.internal", dns));
        assert!(is_match(
            "api-?.example.internal",
            "api-1.example.internal",
            dns
        ));
        assert!(!is_match(
            "api?example.internal",
            "api.example.internal",
            dns
        ));
        assert!(is_match("*.*", "a.b", dns));
        assert!(!is_match("*", "a.b", dns));
        assert!(is_match("a.*.c", "a..c", dns), "a star may be empty");
        assert!(!is_match("a.b", "a.b.", dns));
    }

    #[test]
    fn classes() {
        let c = Options::new().classes();
        assert!(is_match("api-[0-9].x", "api-7.x", c));
        assert!(!is_match("api-[0-9].x", "api-a.x", c));
        assert!(is_match("[!a]", "b", c));
        assert!(is_match("[^a]", "b", c));
        assert!(!is_match("[!a]", "a", c));
        assert!(is_match("[]]", "]", c));
        assert!(is_match("[a-]", "-", c));
        assert!(
            is_match("[ab", "[ab", Options::new()),
            "literal without classes"
        );
        assert_eq!(Glob::new("x[ab", c), Err(Error::UnclosedClass(2)));
        assert_eq!(Glob::new("[z-a]", c), Err(Error::BackwardRange('z', 'a')));
        assert!(!is_match("[ab", "[ab", c), "a bad pattern matches nothing");
        let dns = c.separator('.');
        assert!(
            !is_match("a[.]b", "a.b", dns),
            "a class never matches the separator"
        );
        assert!(is_match("[A-Z]", "q", c.ignore_ascii_case()));
        let e = Glob::new("x[ab", c).unwrap_err().to_string();
        assert!(e.contains("add `]`"), "{e}");
    }

    #[test]
    fn literal_and_display() {
        let g = Glob::new("a.b", Options::new()).unwrap();
        assert!(g.is_literal());
        assert_eq!(g.to_string(), "a.b");
        assert!(!Glob::new("a*", Options::new()).unwrap().is_literal());
    }

    /// The matcher agrees with a plain recursive definition on every small pattern and text.
    #[test]
    fn agrees_with_the_definition() {
        fn naive(p: &[char], t: &[char]) -> bool {
            match (p.first(), t.first()) {
                (None, None) => true,
                (Some('*'), _) => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
                (Some('?'), Some(_)) => naive(&p[1..], &t[1..]),
                (Some(a), Some(b)) if a == b => naive(&p[1..], &t[1..]),
                _ => false,
            }
        }
        let alphabet = ['a', 'b', '*', '?'];
        let texts = ["", "a", "b", "ab", "ba", "aab", "abab", "bbba", "aabba"];
        let mut patterns = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = patterns
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            patterns.extend(longer);
        }
        patterns.sort();
        patterns.dedup();
        for p in &patterns {
            let pc: Vec<char> = p.chars().collect();
            for t in texts {
                let tc: Vec<char> = t.chars().collect();
                assert_eq!(m(p, t), naive(&pc, &tc), "pattern {p:?} text {t:?}");
            }
        }
    }

    /// `*a*a*a…b` against a long run of `a`: exponential for a backtracking matcher, one
    /// pass per token here. The bound is generous: the point is "not exponential".
    #[test]
    fn pathological_patterns_stay_fast() {
        let pattern = format!("{}b", "*a".repeat(30));
        let text = "a".repeat(10_000);
        let started = std::time::Instant::now();
        for opts in [Options::new(), Options::new().ignore_ascii_case().classes()] {
            assert!(!is_match(&pattern, &text, opts));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
