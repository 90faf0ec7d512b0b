use super::*;

#[test]
fn times() {
    assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
    assert_eq!(parse_time(0x17, b"261127023000Z"), Some(1_795_746_600));
    assert_eq!(parse_time(0x18, b"20261127023000Z"), Some(1_795_746_600));
    assert_eq!(parse_time(0x17, b"2611270230Z"), None);
    assert_eq!(parse_time(0x18, b"2026112702300xZ"), None);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for input in [
        &b""[..],
        b"hello",
        &[0x30, 0x03, 0x06, 0x01, 0x00],
        &[0x30, 0x82, 0xff, 0xff, 0x00],
    ] {
        assert!(read(input).is_err());
    }
    let degenerate = certs_only(&[]);
    assert!(matches!(read(&degenerate), Err(Error::Malformed(_))));
}
