//! A bounded DER reader and the few encoders SCEP messages need. Definite lengths only
//! (up to four length octets); every read checks its bounds, nothing panics on input.

use crate::Error;

/// Tags used here.
pub(crate) mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const IA5_STRING: u8 = 0x16;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const CTX0: u8 = 0xa0;
    pub const CTX1: u8 = 0xa1;
    pub const CTX0_PRIM: u8 = 0x80;
}

/// One element: its tag, its content and its whole encoding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

/// A cursor over a run of DER elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

fn bad(what: &str) -> Error {
    Error::Malformed(what.to_string())
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader { rest: input }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element, whatever its tag.
    pub fn any(&mut self, what: &str) -> Result<Tlv<'a>, Error> {
        let input = self.rest;
        let (&t, after) = input.split_first().ok_or_else(|| bad(what))?;
        if t & 0x1f == 0x1f {
            return Err(bad(what));
        }
        let (&l0, after) = after.split_first().ok_or_else(|| bad(what))?;
        let (len, after) = if l0 < 0x80 {
            (l0 as usize, after)
        } else {
            let n = (l0 & 0x7f) as usize;
            if n == 0 || n > 4 || after.len() < n {
                return Err(bad(what));
            }
            let mut len = 0usize;
            for &b in &after[..n] {
                len = (len << 8) | b as usize;
            }
            (len, &after[n..])
        };
        if after.len() < len {
            return Err(bad(what));
        }
        let header = input.len() - after.len();
        let raw = &input[..header + len];
        let content = &after[..len];
        self.rest = &after[len..];
        Ok(Tlv {
            tag: t,
            content,
            raw,
        })
    }

    /// The next element, which must carry `want`.
    pub fn expect(&mut self, want: u8, what: &str) -> Result<Tlv<'a>, Error> {
        let t = self.any(what)?;
        if t.tag != want {
            return Err(bad(what));
        }
        Ok(t)
    }

    /// The next element if it carries `want`.
    pub fn optional(&mut self, want: u8, what: &str) -> Result<Option<Tlv<'a>>, Error> {
        if self.peek_tag() == Some(want) {
            self.expect(want, what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The content of the next element (which must carry `want`), as a reader.
    pub fn enter(&mut self, want: u8, what: &str) -> Result<Reader<'a>, Error> {
        Ok(Reader::new(self.expect(want, what)?.content))
    }

    pub fn end(&self, what: &str) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(bad(what))
        }
    }
}

/// Reads exactly one element filling `input`.
pub(crate) fn single<'a>(input: &'a [u8], want: u8, what: &str) -> Result<Tlv<'a>, Error> {
    let mut r = Reader::new(input);
    let t = r.expect(want, what)?;
    r.end(what)?;
    Ok(t)
}

/// Encodes one element.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = (n as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a constructed element from its encoded parts.
pub(crate) fn cons(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    cons(tag::SEQUENCE, parts)
}

/// A DER SET OF: the elements sorted by their encodings (X.690 11.6).
pub(crate) fn set_of(mut parts: Vec<Vec<u8>>) -> Vec<u8> {
    parts.sort();
    tlv(tag::SET, &parts.concat())
}

/// An OBJECT IDENTIFIER from its content octets.
pub(crate) fn oid(content: &[u8]) -> Vec<u8> {
    tlv(tag::OID, content)
}

/// A small non-negative INTEGER.
pub(crate) fn small_int(v: u8) -> Vec<u8> {
    tlv(tag::INTEGER, &[v])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_roundtrip_and_bounds() {
        for n in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let enc = tlv(tag::OCTET_STRING, &vec![7u8; n]);
            let t = single(&enc, tag::OCTET_STRING, "x").unwrap();
            assert_eq!(t.content.len(), n);
            assert_eq!(t.raw, &enc[..]);
        }
        // truncated, indefinite length, too many length octets, high tag numbers
        for bad in [
            &[0x04, 0x05, 1, 2][..],
            &[0x30, 0x80, 0, 0],
            &[0x04, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0x01, 0x00],
            &[],
        ] {
            assert!(Reader::new(bad).any("x").is_err(), "{bad:?}");
        }
        let sorted = set_of(vec![vec![0x04, 1, 2], vec![0x02, 1, 1]]);
        assert_eq!(sorted, vec![0x31, 6, 0x02, 1, 1, 0x04, 1, 2]);
    }
}
