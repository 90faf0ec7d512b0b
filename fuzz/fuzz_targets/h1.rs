//! The HTTP/1 request head and body framing of the proxy's HTTP mode and the CA's plain
//! listener (`twoway_net::h1`): the head is scanned for framing fields, the body decoded
//! (chunked or by length) from the rest of the input in pieces. Invariants: never more
//! consumed than given, never more payload than input, and the decoder makes progress.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twoway_net::h1;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = req.parse(data) else {
        return;
    };
    let http10 = req.version == Some(0);
    let fields = h1::Fields::scan(req.headers);
    let _ = h1::keep_alive(http10, &fields);
    let Ok(mut framing) = h1::request_body(http10, &fields) else {
        return;
    };
    let mut rest = &data[head_len..];
    let mut payload = Vec::new();
    // feed the body in pieces of varying size, as reads deliver it
    let mut piece = 1usize;
    while !rest.is_empty() {
        let take = piece.min(rest.len());
        match h1::consume(&mut framing, &rest[..take], Some(&mut payload)) {
            Ok(n) => {
                assert!(n <= take, "consumed {n} of {take}");
                if n == 0 {
                    break;
                }
                rest = &rest[n..];
            }
            Err(_) => break,
        }
        piece = piece % 7 + 1;
    }
    assert!(payload.len() <= data.len() - head_len);
});
