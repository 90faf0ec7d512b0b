//! What a request looks like to the route rules, made the same for every client and every
//! backend: the request path normalized before matching (and forwarded normalized, so the
//! backend serves exactly what was authorized), ambiguous encodings refused, and request
//! headers that could pass for the proxy's identity headers recognized in every spelling.
//!
//! Path normalization (RFC 3986 §6.2.2, as Envoy's `normalize_path` + `merge_slashes`):
//! - percent-encoded unreserved characters are decoded (`%61` → `a`, `%2e` → `.`), other
//!   escapes are kept with upper-case hex digits (`%3f` → `%3F`);
//! - `%2F`, `%5C` and `%00` (an encoded `/`, `\` or NUL), a raw `\`, and an invalid escape
//!   are refused: backends disagree on what they mean, so no answer would be safe;
//! - runs of `/` are merged and `.`/`..` segments removed (`..` never climbs above `/`).
//!
//! The query string is not part of the path and is passed on unchanged.

use std::borrow::Cow;

/// Why a request target is refused with 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadTarget {
    /// `%2F`: an encoded `/` (some backends decode it, some do not).
    EncodedSlash,
    /// `%5C` or a raw `\` (some backends treat it as `/`).
    Backslash,
    /// `%00`.
    EncodedNul,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// The path does not start with `/`.
    NotAbsolute,
}

impl BadTarget {
    /// Words for the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            BadTarget::EncodedSlash => "encoded slash in path",
            BadTarget::Backslash => "backslash in path",
            BadTarget::EncodedNul => "encoded NUL in path",
            BadTarget::BadEscape => "invalid percent-encoding in path",
            BadTarget::NotAbsolute => "path does not start with /",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// True when `path` needs no work: no escape, no backslash, no empty or dot segment.
fn already_normal(p: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in p.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // "/." starts a dot segment only when it is "." or ".." as a whole segment
                let rest = &p[i..];
                let seg = rest.split(|&c| c == b'/').next().unwrap_or_default();
                if seg == b"." || seg == b".." {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// Normalizes the path of a request (no query): see the module documentation.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, BadTarget> {
    let p = path.as_bytes();
    if p.first() != Some(&b'/') {
        return Err(BadTarget::NotAbsolute);
    }
    if already_normal(p) {
        return Ok(Cow::Borrowed(path));
    }
    // 1. escapes: decode the unreserved, refuse the ambiguous, upper-case the rest
    let mut decoded = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    p.get(i + 1).copied().and_then(hex),
                    p.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(BadTarget::BadEscape);
                };
                let v = h * 16 + l;
                match v {
                    b'/' => return Err(BadTarget::EncodedSlash),
                    b'\\' => return Err(BadTarget::Backslash),
                    0 => return Err(BadTarget::EncodedNul),
                    v if unreserved(v) => decoded.push(v),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        decoded.extend_from_slice(&[
                            b'%',
                            HEX[usize::from(v >> 4)],
                            HEX[usize::from(v & 15)],
                        ]);
                    }
                }
                i += 3;
            }
            b'\\' => return Err(BadTarget::Backslash),
            b => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // 2. segments: merge slashes, remove dot segments
    let mut segs: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for seg in decoded[1..].split(|&b| b == b'/') {
        trailing = false;
        match seg {
            b"" | b"." => trailing = true,
            b".." => {
                segs.pop();
                trailing = true;
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for s in &segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing || segs.is_empty() {
        out.push(b'/');
    }
    // only ASCII went in (the caller checked the target is visible ASCII) and escapes
    // decoded to unreserved ASCII characters only
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| BadTarget::BadEscape)
}

/// True when `prefix` covers `path` on a segment boundary: `/admin` covers `/admin`,
/// `/admin/` and `/admin/x`, not `/adminx`. Both are normalized; `prefix` has no trailing
/// `/` unless it is `/`.
pub fn covers(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// A request header that means something to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// An identity header the proxy sets (`X-Forwarded-Client-Cert`, `X-Client-Identity`,
    /// `X-Forwarded-Proto`), or any spelling of one of these, of `X-Forwarded-For` or of
    /// `Forwarded` with `_` for `-` (CGI, WSGI and PHP backends fold `_` and `-` together):
    /// always removed.
    Identity,
    /// `X-Forwarded-For` or `Forwarded` as spelled: kept only from trusted peers.
    Forwarded,
    /// Anything else.
    Other,
}

/// `name` equals `want` (lower-case, `-` separated) ignoring case and treating `_` as `-`;
/// the second value says whether an `_` was seen.
fn folded_eq(name: &[u8], want: &[u8]) -> (bool, bool) {
    if name.len() != want.len() {
        return (false, false);
    }
    let mut underscore = false;
    for (&a, &b) in name.iter().zip(want) {
        let a = match a {
            b'_' => {
                underscore = true;
                b'-'
            }
            a => a.to_ascii_lowercase(),
        };
        if a != b {
            return (false, false);
        }
    }
    (true, underscore)
}

/// Classifies a request header name.
pub fn classify(name: &[u8]) -> Special {
    for id in [
        &b"x-forwarded-client-cert"[..],
        b"x-client-identity",
        b"x-forwarded-proto",
    ] {
        if folded_eq(name, id).0 {
            return Special::Identity;
        }
    }
    for fwd in [&b"x-forwarded-for"[..], b"forwarded"] {
        match folded_eq(name, fwd) {
            (true, true) => return Special::Identity,
            (true, false) => return Special::Forwarded,
            _ => {}
        }
    }
    Special::Other
}

/// A method as sent is a token of upper-case letters (RFC 9110 methods are case-sensitive;
/// `post` is not `POST`, but some backends fold it, so it is refused like nginx does).
pub fn method_ok(m: &str) -> bool {
    !m.is_empty()
        && m.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, BadTarget> {
        normalize_path(p).map(|c| c.into_owned())
    }

    #[test]
    fn paths_are_normalized() {
        for (raw, want) in [
            ("/", "/"),
            ("/admin/x", "/admin/x"),
            ("/x/../admin/x", "/admin/x"),
            ("/./admin/x", "/admin/x"),
            ("//admin/x", "/admin/x"),
            ("/admin//x/", "/admin/x/"),
            ("/%61dmin/x", "/admin/x"),
            ("/%2e%2e/admin", "/admin"),
            ("/a/%2E/b", "/a/b"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/a.b/..c/.d", "/a.b/..c/.d"),
            ("/~user/%7e", "/~user/~"),
        ] {
            assert_eq!(n(raw).as_deref(), Ok(want), "{raw}");
        }
        assert!(matches!(normalize_path("/a/b"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize_path("/a.b/.c"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (raw, why) in [
            ("/%2fadmin/x", BadTarget::EncodedSlash),
            ("/%2Fadmin", BadTarget::EncodedSlash),
            ("/a%5cb", BadTarget::Backslash),
            ("/a\\b", BadTarget::Backslash),
            ("/a%00", BadTarget::EncodedNul),
            ("/a%zz", BadTarget::BadEscape),
            ("/a%4", BadTarget::BadEscape),
            ("/a%", BadTarget::BadEscape),
            ("admin", BadTarget::NotAbsolute),
        ] {
            assert_eq!(n(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(covers("/admin", "/admin"));
        assert!(covers("/admin", "/admin/"));
        assert!(covers("/admin", "/admin/x"));
        assert!(!covers("/admin", "/adminx"));
        assert!(!covers("/admin", "/"));
        assert!(covers("/", "/anything"));
        // gRPC method paths: a service covers its methods, not a longer service name
        let m = "/pkg.v1.Billing/Charge";
        assert_eq!(normalize_path(m).unwrap(), m);
        assert!(covers("/pkg.v1.Billing", m));
        assert!(covers(m, m));
        assert!(!covers("/pkg.v1.Bill", m));
        assert!(!covers("/pkg.v1.Billing/Char", m));
    }

    #[test]
    fn identity_headers_in_every_spelling() {
        for name in [
            "X-Client-Identity",
            "x_client_identity",
            "X_Client-Identity",
            "X-Forwarded_Client_Cert",
            "x-forwarded-proto",
            "X_FORWARDED_PROTO",
            "X_Forwarded_For",
            "forwarded",
        ] {
            let want = if name == "forwarded" {
                Special::Forwarded
            } else {
                Special::Identity
            };
            assert_eq!(classify(name.as_bytes()), want, "{name}");
        }
        assert_eq!(classify(b"X-Forwarded-For"), Special::Forwarded);
        assert_eq!(classify(b"x-forwarded-host"), Special::Other);
        assert_eq!(classify(b"x-client-identityy"), Special::Other);
    }

    #[test]
    fn methods_are_upper_case_tokens() {
        assert!(method_ok("GET") && method_ok("PATCH") && method_ok("MKCOL"));
        assert!(!method_ok("post") && !method_ok("Get") && !method_ok(""));
    }
}
