//! PROXY protocol v2 headers as the proxy writes them to backends, with TLS details and
//! the client's identity from a hostile certificate (any bytes in SNI, ALPN, CN, SAN).
//! Round trip: an independent decoder (RFC-style, here) reads back exactly what went in.
#![no_main]
use libfuzzer_sys::{arbitrary, fuzz_target};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use twoway_proxy::proxy_protocol::{encode, TlsInfo};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    ports: (u16, u16),
    alpn: Option<Vec<u8>>,
    sni: Option<String>,
    version: String,
    cn: Option<String>,
    identity: String,
    cert_sha256: String,
}

fn addr(v6: bool, b: [u8; 16], port: u16) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    SocketAddr::new(ip, port)
}

/// The TLVs of a v2 header: (type, value) in order, and the header's whole length.
fn decode(h: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
    const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    assert_eq!(&h[..12], SIG, "signature");
    assert_eq!(h[12], 0x21, "version 2, PROXY command");
    let len = u16::from_be_bytes([h[14], h[15]]) as usize;
    assert_eq!(h.len(), 16 + len, "length field");
    let addr_len = match h[13] {
        0x11 => 12,
        0x21 => 36,
        f => panic!("family {f:#x}"),
    };
    let mut tlvs = Vec::new();
    let mut p = 16 + addr_len;
    while p < h.len() {
        let (t, l) = (h[p], u16::from_be_bytes([h[p + 1], h[p + 2]]) as usize);
        tlvs.push((t, h[p + 3..p + 3 + l].to_vec()));
        p += 3 + l;
    }
    assert_eq!(p, h.len(), "TLVs fill the header exactly");
    (tlvs, h.len())
}

fuzz_target!(|i: Input| {
    let (src, dst) = (addr(i.v6, i.src, i.ports.0), addr(i.v6, i.dst, i.ports.1));
    let info = TlsInfo {
        alpn: i.alpn.as_deref(),
        sni: i.sni.as_deref(),
        version: &i.version,
        cn: i.cn.as_deref(),
        identity: &i.identity,
        cert_sha256: &i.cert_sha256,
    };
    let h = encode(src, dst, &info);
    let (tlvs, _) = decode(&h);
    // the identity TLV carries exactly the identity, whatever bytes it holds (or is left
    // out when it would not fit)
    if let Some((_, v)) = tlvs
        .iter()
        .find(|(t, _)| *t == twoway_proxy::proxy_protocol::PP2_TYPE_TWOWAY_IDENTITY)
    {
        assert_eq!(v, i.identity.as_bytes());
    }
});
