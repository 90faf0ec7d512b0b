//! PROXY protocol version 2 header (the binary form), sent to a TCP-mode backend.
//!
//! Carries the client and proxy addresses and these TLVs:
//! - `PP2_TYPE_ALPN` (0x01) when a protocol was negotiated,
//! - `PP2_TYPE_AUTHORITY` (0x02) with the SNI the client sent,
//! - `PP2_TYPE_SSL` (0x20) with client flags SSL|CERT_CONN|CERT_SESS, verify = 0, and the
//!   sub-TLVs `PP2_SUBTYPE_SSL_VERSION` (0x21) and `PP2_SUBTYPE_SSL_CN` (0x22),
//! - `0xE0` (first custom type): the peer identity (SPIFFE/URI SAN, else DNS SAN, else CN),
//! - `0xE1`: the SHA-256 hex fingerprint of the client certificate.

use std::net::SocketAddr;

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// TLV type of the peer identity.
pub const PP2_TYPE_TWOWAY_IDENTITY: u8 = 0xE0;
/// TLV type of the client certificate fingerprint.
pub const PP2_TYPE_TWOWAY_CERT_SHA256: u8 = 0xE1;

/// What goes into the header besides the addresses.
#[derive(Debug, Default)]
pub struct TlsInfo<'a> {
    /// Negotiated ALPN protocol.
    pub alpn: Option<&'a [u8]>,
    /// SNI sent by the client.
    pub sni: Option<&'a str>,
    /// `TLSv1.3` / `TLSv1.2`.
    pub version: &'a str,
    /// First subject CN.
    pub cn: Option<&'a str>,
    /// Peer identity.
    pub identity: &'a str,
    /// Client certificate SHA-256 hex.
    pub cert_sha256: &'a str,
}

fn tlv(out: &mut Vec<u8>, typ: u8, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.push(typ);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

/// Encodes a v2 PROXY header for a TCP stream from `src` (the client) to `dst` (our
/// listener). Mixed address families are mapped to IPv6.
pub fn encode(src: SocketAddr, dst: SocketAddr, info: &TlsInfo<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    let family = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x11
        }
        _ => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped().octets(),
                SocketAddr::V6(v6) => v6.ip().octets(),
            };
            body.extend_from_slice(&v6(src));
            body.extend_from_slice(&v6(dst));
            0x21
        }
    };
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    if let Some(alpn) = info.alpn {
        tlv(&mut body, 0x01, alpn);
    }
    if let Some(sni) = info.sni {
        tlv(&mut body, 0x02, sni.as_bytes());
    }
    let mut ssl = vec![0x07, 0, 0, 0, 0];
    tlv(&mut ssl, 0x21, info.version.as_bytes());
    if let Some(cn) = info.cn {
        tlv(&mut ssl, 0x22, cn.as_bytes());
    }
    tlv(&mut body, 0x20, &ssl);
    tlv(
        &mut body,
        PP2_TYPE_TWOWAY_IDENTITY,
        info.identity.as_bytes(),
    );
    tlv(
        &mut body,
        PP2_TYPE_TWOWAY_CERT_SHA256,
        info.cert_sha256.as_bytes(),
    );

    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, PROXY command
    out.push(family); // TCP over IPv4 or IPv6
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body[..usize::from(len)]);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn v4_header_layout() {
        let h = encode(
            "10.0.0.1:1234".parse().unwrap(),
            "10.0.0.2:8443".parse().unwrap(),
            &TlsInfo {
                version: "TLSv1.3",
                identity: "spiffe://e.org/a",
                cert_sha256: "ab",
                ..Default::default()
            },
        );
        assert_eq!(&h[..12], &SIGNATURE);
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        let len = u16::from_be_bytes([h[14], h[15]]) as usize;
        assert_eq!(h.len(), 16 + len);
        assert_eq!(&h[16..20], &[10, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 1234);
        let id = b"spiffe://e.org/a";
        assert!(h.windows(id.len()).any(|w| w == id));
    }
}
