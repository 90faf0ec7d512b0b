//! Route rules of `twoway proxy --http` against the path, method and header tricks an
//! attacker tries: each variant is refused or lands on the route that authorizes it, and
//! the backend (tests/support/backend.py, which answers `ok <target as received>`) sees
//! exactly the path that was authorized. Clients: raw HTTP/1.1 over rustls, curl with
//! `--path-as-is` over HTTP/1.1 and HTTP/2, and the Python h2 client for what curl cannot
//! send over HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::proxy::*;

const ROUTES: &str = r#"
[[server.route]]
prefix = "/admin"
allow = ["spiffe://example.org/ns/prod/sa/alice"]

[[server.route]]
prefix = "/ops/"
methods = ["POST", "PUT", "DELETE"]
allow = ["spiffe://example.org/ns/prod/sa/alice"]

[[server.route]]
prefix = "/"
"#;

/// `GET target` with `extra` header lines, as bob, over raw HTTP/1.1.
fn h1(t: &HttpProxy, who: &str, method: &str, target: &str, extra: &str) -> (u16, String) {
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"
    );
    raw_https(&t.pki, who, t.port, req.as_bytes())
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |x| x.1)
}

#[test]
fn path_tricks_cannot_reach_a_protected_route() {
    let t = HttpProxy::with_config(ROUTES);
    let logs = || t.logs();
    // the baseline: bob may not, alice may
    assert_eq!(h1(&t, "bob", "GET", "/admin/x", "").0, 403, "{}", logs());
    let (s, r) = h1(&t, "alice", "GET", "/admin/x", "");
    assert_eq!((s, body(&r)), (200, "ok /admin/x"), "{r}");

    // dot segments, merged slashes, encoded unreserved characters, absolute form: all the
    // same resource as /admin/x, so all refused to bob…
    for target in [
        "/x/../admin/x",
        "/./admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/%2e%2e/admin/x",
        "/admin/./x",
        "http://localhost//admin/x",
        "/admin",
        "/admin/",
    ] {
        let (s, r) = h1(&t, "bob", "GET", target, "");
        assert_eq!(s, 403, "bob GET {target}: {r}\n{}", logs());
        // …and for alice the backend sees the normalized path she was authorized for
        let (s, r) = h1(&t, "alice", "GET", target, "");
        assert_eq!(s, 200, "alice GET {target}: {r}");
        let want = if target.ends_with("/admin") {
            "ok /admin"
        } else if target.ends_with("/admin/") {
            "ok /admin/"
        } else {
            "ok /admin/x"
        };
        assert_eq!(body(&r), want, "alice GET {target}");
    }
    // ambiguous encodings are refused outright, whoever asks
    for target in [
        "/%2fadmin/x",
        "/%2Fadmin",
        "/admin%5cx",
        "/admin\\x",
        "/a%00",
        "/a%zz",
    ] {
        for who in ["bob", "alice"] {
            let (s, r) = h1(&t, who, "GET", target, "");
            assert_eq!(s, 400, "{who} GET {target}: {r}");
            assert!(r.contains("path"), "the 400 says what was wrong: {r}");
        }
    }
    // a prefix matches on segment boundaries: /adminx is not under /admin
    let (s, r) = h1(&t, "bob", "GET", "/adminx", "");
    assert_eq!((s, body(&r)), (200, "ok /adminx"), "{r}");
    // the query is passed on as sent
    let (s, r) = h1(&t, "alice", "GET", "/x/../admin/x?a=%2F..&b", "");
    assert_eq!((s, body(&r)), (200, "ok /admin/x?a=%2F..&b"), "{r}");

    // curl --path-as-is over HTTP/1.1 and HTTP/2 (hyper's h2 server path)
    for proto in ["--http1.1", "--http2"] {
        for target in ["/x/../admin/x", "/./admin/x", "//admin/x", "/%61dmin/x"] {
            let out = curl_mtls(
                &t.pki,
                Some("bob"),
                &t.url(target),
                &[proto, "--path-as-is", "-w", "\n%{http_code}"],
            );
            let text = stdout(&out);
            assert!(text.ends_with("\n403"), "bob {proto} {target}: {text}");
            let out = curl_mtls(
                &t.pki,
                Some("alice"),
                &t.url(target),
                &[proto, "--path-as-is", "-w", "\n%{http_code}"],
            );
            assert_eq!(stdout(&out), "ok /admin/x\n200", "alice {proto} {target}");
        }
        let out = curl_mtls(
            &t.pki,
            Some("bob"),
            &t.url("/%2fadmin/x"),
            &[proto, "--path-as-is", "-w", "\n%{http_code}"],
        );
        assert!(stdout(&out).ends_with("\n400"), "{proto}: {}", stdout(&out));
    }
}

#[test]
fn method_scoped_routes_deny_other_methods_and_odd_methods() {
    let t = HttpProxy::with_config(ROUTES);
    // the writers' route: bob may not write, alice may
    for m in ["POST", "PUT", "DELETE"] {
        assert_eq!(h1(&t, "bob", m, "/ops/x", "").0, 403, "bob {m}");
        assert_eq!(h1(&t, "alice", m, "/ops/x", "").0, 200, "alice {m}");
    }
    // other methods under /ops/ do not fall through to the allow-all route
    for m in ["PATCH", "GET", "OPTIONS"] {
        for who in ["bob", "alice"] {
            let (s, r) = h1(&t, who, m, "/ops/x", "");
            assert_eq!(s, 403, "{who} {m} /ops/x: {r}");
        }
    }
    // a lower-case method is not a way around the rules
    for m in ["post", "Post", "patch"] {
        let (s, r) = h1(&t, "bob", m, "/ops/x", "");
        assert_eq!(s, 400, "bob {m}: {r}");
    }
    // other paths are unaffected
    assert_eq!(h1(&t, "bob", "PATCH", "/other", "").0, 200);
    // over HTTP/2 too
    for (m, want) in [("PATCH", 403), ("POST", 403), ("post", 400)] {
        let mut cmd = std::process::Command::new(python_h2());
        cmd.arg(support("h2client.py"))
            .args(["request", m, "/ops/x"])
            .args(["--port", &t.port.to_string()])
            .args(["--ca", &t.pki.p("ca.pem")])
            .args(["--cert", &t.pki.p("bob.pem"), "--key", &t.pki.p("bob.key")]);
        let r = run_json(&mut cmd, Duration::from_secs(30), &t.logs());
        assert_eq!(r["status"], want, "h2 {m}: {r}");
    }
}

/// A backend that folds case would serve /ADMIN/x as /admin/x: with
/// `case_insensitive_paths` the route rules fold it too.
#[test]
fn case_insensitive_paths_for_case_folding_backends() {
    let t = HttpProxy::with_config(&format!("case_insensitive_paths = true\n{ROUTES}"));
    for target in ["/ADMIN/x", "/Admin", "/%41dmin/x", "/x/../aDmIn/x"] {
        let (s, r) = h1(&t, "bob", "GET", target, "");
        assert_eq!(s, 403, "bob GET {target}: {r}");
    }
    let (s, r) = h1(&t, "alice", "GET", "/ADMIN/x", "");
    assert_eq!(
        (s, body(&r)),
        (200, "ok /ADMIN/x"),
        "the path keeps its case: {r}"
    );
    // and without the setting /ADMIN is another resource, under the allow-all route
    let t = HttpProxy::with_config(ROUTES);
    assert_eq!(h1(&t, "bob", "GET", "/ADMIN/x", "").0, 200);
}

#[test]
fn identity_and_forwarding_headers_cannot_be_spoofed() {
    let spoof = "X_Client_Identity: spiffe://example.org/ns/prod/sa/alice\r\n\
                 X-Client_Identity: spiffe://example.org/ns/prod/sa/alice\r\n\
                 X-Forwarded_Client_Cert: Hash=00\r\n\
                 x-forwarded-proto: http\r\n\
                 X-Forwarded-For: 203.0.113.7\r\n\
                 X_Forwarded_For: 203.0.113.8\r\n\
                 Forwarded: for=203.0.113.9\r\n";
    let t = HttpProxy::with_config(ROUTES);
    let (s, r) = h1(&t, "bob", "GET", "/headers", spoof);
    assert_eq!(s, 200, "{r}");
    let got: serde_json::Value = serde_json::from_str(body(&r)).unwrap();
    let headers: Vec<(String, String)> = got["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let text = format!("{headers:?}");
    assert!(
        !text.contains("203.0.113") && !text.contains("Hash=00"),
        "{text}"
    );
    let one = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().replace('_', "-") == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(
        one("x-client-identity"),
        ["spiffe://example.org/ns/dev/sa/bob"]
    );
    assert_eq!(one("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(one("x-forwarded-proto"), ["https"]);
    assert!(one("forwarded").is_empty(), "{text}");

    // from a trusted proxy the forwarding chain is kept and our peer appended
    let t2 = HttpProxy::with_config(&format!("trusted_proxies = [\"127.0.0.1\"]\n{ROUTES}"));
    let (_, r) = h1(&t2, "bob", "GET", "/headers", spoof);
    let got: serde_json::Value = serde_json::from_str(body(&r)).unwrap();
    let text = got["headers"].to_string();
    assert!(
        text.contains(r#"["X-Forwarded-For","203.0.113.7"]"#)
            && text.contains(r#"["x-forwarded-for","127.0.0.1"]"#)
            && text.contains(r#"["Forwarded","for=203.0.113.9"]"#),
        "{text}"
    );
    assert!(
        !text.contains("203.0.113.8") && !text.contains("Hash=00"),
        "{text}"
    );

    // two Host headers, or a Host that disagrees with the absolute-form authority: 400
    let (s, r) = raw_https(
        &t.pki,
        "bob",
        t.port,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 400, "{r}");
    let (s, r) = raw_https(
        &t.pki,
        "bob",
        t.port,
        b"GET http://evil/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 400, "{r}");
    // over HTTP/2: :authority and a differing host header
    let mut cmd = std::process::Command::new(python_h2());
    cmd.arg(support("h2client.py"))
        .args(["request", "GET", "/", "--header", "host:evil"])
        .args(["--port", &t.port.to_string()])
        .args(["--ca", &t.pki.p("ca.pem")])
        .args(["--cert", &t.pki.p("bob.pem"), "--key", &t.pki.p("bob.key")]);
    let r = run_json(&mut cmd, Duration::from_secs(30), &t.logs());
    assert_eq!(r["status"], 400, "{r}");
}
