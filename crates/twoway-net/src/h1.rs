//! One HTTP/1.x request framing for every listener that parses heads itself (the proxy's
//! HTTP/1 path and the online CA's plain listener): what the framing fields say
//! ([`Fields`]), how a request body is delimited ([`request_body`], refusing what request
//! smuggling plays on), whether the connection stays open ([`keep_alive`]), and a
//! chunked-coding tracker that follows a body without decoding it ([`Chunk`], [`consume`]).
//! Strict where RFC 9112 allows leniency: `Content-Length` is digits only and must agree
//! with itself; `Transfer-Encoding` with `Content-Length`, a last coding other than
//! `chunked`, or any `Transfer-Encoding` from an HTTP/1.0 client are refused; chunk lines
//! end in CRLF.

/// Longest chunk extension accepted, in bytes.
const MAX_CHUNK_EXT: u16 = 4096;
/// Longest trailer line accepted, in bytes.
const MAX_TRAILER_LINE: usize = 64 * 1024;

/// A body that breaks its framing.
#[derive(Debug, PartialEq, Eq)]
pub struct BadBody;

/// Where a chunked body stands (RFC 9112 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Reading the chunk size (hex digits so far).
    Size {
        /// The size read so far.
        size: u64,
        /// Hex digits read.
        digits: u8,
    },
    /// In a chunk extension, until CR.
    Ext {
        /// The chunk's size.
        size: u64,
        /// Extension bytes so far.
        len: u16,
    },
    /// After the CR of a size line.
    SizeLf(u64),
    /// Chunk data bytes left.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// A trailer line.
    Line {
        /// Bytes so far (0 at the start of a line).
        len: u32,
    },
    /// The LF of a trailer line.
    LineLf,
    /// The LF of the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
}

impl Chunk {
    /// The start of a chunked body.
    pub const START: Chunk = Chunk::Size { size: 0, digits: 0 };

    /// Advances over the start of `buf`; returns how many bytes it consumed (at least one
    /// when `buf` is not empty and the body is not done) and whether they are chunk data.
    pub fn step(&mut self, buf: &[u8]) -> Result<(usize, bool), BadBody> {
        if let Chunk::Data(left) = *self {
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let left = left - k as u64;
            *self = if left == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data(left)
            };
            return Ok((k, true));
        }
        let mut i = 0;
        while let Some(&b) = buf.get(i) {
            i += 1;
            *self = match (*self, b) {
                (Chunk::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
                    if digits >= 15 {
                        return Err(BadBody);
                    }
                    let v = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        _ => b.wrapping_sub(b'A').wrapping_add(10),
                    };
                    Chunk::Size {
                        size: size << 4 | u64::from(v),
                        digits: digits + 1,
                    }
                }
                (Chunk::Size { size, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                    Chunk::Ext { size, len: 0 }
                }
                (Chunk::Size { size, digits }, b'\r') if digits > 0 => Chunk::SizeLf(size),
                (Chunk::Ext { size, .. }, b'\r') => Chunk::SizeLf(size),
                (Chunk::Ext { size, len }, b) if b != b'\n' && len < MAX_CHUNK_EXT => {
                    Chunk::Ext { size, len: len + 1 }
                }
                (Chunk::SizeLf(0), b'\n') => Chunk::Line { len: 0 },
                (Chunk::SizeLf(size), b'\n') => {
                    *self = Chunk::Data(size);
                    return Ok((i, false));
                }
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::START,
                (Chunk::Line { len: 0 }, b'\r') => Chunk::FinalLf,
                (Chunk::Line { .. }, b'\r') => Chunk::LineLf,
                (Chunk::Line { len }, b) if b != b'\n' && (len as usize) < MAX_TRAILER_LINE => {
                    Chunk::Line { len: len + 1 }
                }
                (Chunk::LineLf, b'\n') => Chunk::Line { len: 0 },
                (Chunk::FinalLf, b'\n') => {
                    *self = Chunk::Done;
                    return Ok((i, false));
                }
                _ => return Err(BadBody),
            };
        }
        Ok((i, false))
    }
}

/// How a message body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are left (0: no body, or it is complete).
    Length(u64),
    /// Chunked coding, at this point.
    Chunked(Chunk),
    /// When the sender closes (responses only).
    Close,
}

impl Framing {
    /// The body is complete.
    pub fn done(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Chunked(Chunk::Done))
    }
}

/// Advances `framing` over `avail`; returns how many bytes of `avail` belong to the body.
/// With `data`, only the payload (chunk data, without the chunked framing) is appended to it.
pub fn consume(
    framing: &mut Framing,
    avail: &[u8],
    mut data: Option<&mut Vec<u8>>,
) -> Result<usize, BadBody> {
    let n = match framing {
        Framing::Length(left) => {
            let k = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(avail.len());
            *left -= k as u64;
            k
        }
        Framing::Close => avail.len(),
        Framing::Chunked(c) => {
            let mut pos = 0;
            // Bounded: every step consumes at least one byte.
            while pos < avail.len() && *c != Chunk::Done {
                let (k, is_data) = c.step(&avail[pos..])?;
                if is_data {
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&avail[pos..pos + k]);
                    }
                }
                pos += k;
            }
            return Ok(pos);
        }
    };
    if let Some(d) = data {
        d.extend_from_slice(&avail[..n]);
    }
    Ok(n)
}

/// `v` without leading and trailing ASCII whitespace.
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// `Content-Length`: digits only.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// What the framing, `Connection` and `Transfer-Encoding` fields of a head say.
#[derive(Default)]
pub struct Fields<'h> {
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Names listed in `Connection` (hop-by-hop too).
    pub listed: Vec<&'h [u8]>,
    /// The `Content-Length`, when every one present agrees.
    pub length: Option<u64>,
    /// Conflicting or malformed `Content-Length`.
    pub bad_length: bool,
    /// A `Transfer-Encoding` field is present.
    pub te: bool,
    /// The last transfer coding is `chunked`.
    pub chunked: bool,
    /// The (last) `Host` value.
    pub host: Option<&'h [u8]>,
    /// How many `Host` fields there were.
    pub hosts: usize,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// An `Expect` field with any other expectation.
    pub expect_other: bool,
}

impl<'h> Fields<'h> {
    /// Reads the fields of `headers` that say how the message is framed and kept.
    pub fn scan(headers: &[httparse::Header<'h>]) -> Self {
        let mut f = Fields::default();
        for h in headers {
            let n = h.name;
            if n.eq_ignore_ascii_case("connection") {
                for t in h.value.split(|&b| b == b',').map(trim) {
                    if t.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        f.keep_alive = true;
                    } else if !t.is_empty() {
                        f.listed.push(t);
                    }
                }
            } else if n.eq_ignore_ascii_case("content-length") {
                match parse_length(h.value) {
                    Some(v) if f.length.is_none_or(|l| l == v) => f.length = Some(v),
                    _ => f.bad_length = true,
                }
            } else if n.eq_ignore_ascii_case("transfer-encoding") {
                f.te = true;
                if let Some(last) = h.value.rsplit(|&b| b == b',').map(trim).next() {
                    f.chunked = last.eq_ignore_ascii_case(b"chunked");
                }
            } else if n.eq_ignore_ascii_case("host") {
                f.host = Some(trim(h.value));
                f.hosts += 1;
            } else if n.eq_ignore_ascii_case("expect") {
                if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                    f.expect_continue = true;
                } else {
                    f.expect_other = true;
                }
            }
        }
        f
    }
}

/// How a request's body is delimited, or why the head is refused (400): the rules of RFC
/// 9112 §6.3, without its leniency.
pub fn request_body(http10: bool, f: &Fields<'_>) -> Result<Framing, &'static str> {
    if f.te {
        if f.length.is_some() || f.bad_length {
            return Err("the request has both Transfer-Encoding and Content-Length");
        }
        if http10 {
            return Err("Transfer-Encoding from an HTTP/1.0 client");
        }
        if !f.chunked {
            return Err("the last transfer coding is not chunked");
        }
        return Ok(Framing::Chunked(Chunk::START));
    }
    if f.bad_length {
        return Err("bad or conflicting Content-Length");
    }
    Ok(Framing::Length(f.length.unwrap_or(0)))
}

/// Whether the client wants the connection kept open after this request.
pub fn keep_alive(http10: bool, f: &Fields<'_>) -> bool {
    !f.close && (!http10 || f.keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_tracker_across_every_split() {
        let body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut f = Framing::Chunked(Chunk::START);
            let mut data = Vec::new();
            let a = consume(&mut f, &body[..split], Some(&mut data)).unwrap();
            let b = consume(&mut f, &body[a..], Some(&mut data)).unwrap();
            assert_eq!(a + b, end, "split {split}");
            assert!(f.done());
            assert_eq!(data, b"hello0123456789");
        }
    }

    #[test]
    fn chunked_tracker_rejects_bad_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"\r\n",
            b"1234567890123456\r\n",
            b"0\r\n\n",
        ] {
            let mut f = Framing::Chunked(Chunk::START);
            assert_eq!(consume(&mut f, bad, None), Err(BadBody), "{bad:?}");
        }
    }

    #[test]
    fn length_framing_stops_at_the_end() {
        let mut f = Framing::Length(3);
        assert_eq!(consume(&mut f, b"abcdef", None), Ok(3));
        assert!(f.done());
    }

    #[test]
    fn request_bodies_by_rfc_9112_without_leniency() {
        fn check(head: &[u8], http10: bool) -> Result<Framing, &'static str> {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(head).unwrap();
            let f = Fields::scan(req.headers);
            request_body(http10, &f)
        }
        let h = |s: &str| format!("POST / HTTP/1.1\r\n{s}\r\n").into_bytes();
        assert_eq!(
            check(&h("Content-Length: 5\r\n"), false),
            Ok(Framing::Length(5))
        );
        assert_eq!(check(&h(""), false), Ok(Framing::Length(0)));
        assert_eq!(
            check(&h("Transfer-Encoding: gzip, chunked\r\n"), false),
            Ok(Framing::Chunked(Chunk::START))
        );
        for bad in [
            "Content-Length: +5\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
        ] {
            assert!(check(&h(bad), false).is_err(), "{bad}");
        }
        assert!(check(&h("Transfer-Encoding: chunked\r\n"), true).is_err());
    }
}
