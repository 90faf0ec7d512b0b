//! `twoway proxy --http` judged by independent clients: HTTP/2 and keep-alive with curl
//! (which picks h2 by itself), nghttp (Debian `nghttp2-client`) and a Python client on the
//! `h2` package from PyPI (`tests/support/h2client.py`); and the route rules against the
//! path, method and header tricks an attacker tries, each variant refused or landing on
//! the route that authorizes it, the backend seeing exactly the path that was authorized
//! (raw HTTP/1.1 over rustls, curl with `--path-as-is` over HTTP/1.1 and HTTP/2, the
//! Python h2 client for what curl cannot send). The backend is the raw-socket Python
//! server of `tests/support/backend.py`, which answers `ok <target as received>` and
//! whose answers the clients check byte for byte.
//!
//! Every request has its own deadline: a stall fails the test at once with what stalled.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::http::{metric_sum, metrics_on};
use common::pki::{sha256_hex, Pki, ALICE};
use common::proxy::*;
use common::{
    free_port, read_in_background, require_tool, run_with_timeout, strings, wait_child, Server,
};

// ---------------------------------------------------------------------------------------
// HTTP/2 and keep-alive
// ---------------------------------------------------------------------------------------

/// The reported bug: curl answered the first request of an HTTP/2 connection and then hung
/// on the next one. Here: sequential requests on one connection (curl reuses it for every
/// URL of one invocation), each with its own deadline; then many URLs in parallel streams.
#[test]
fn curl_sequential_and_parallel_requests_over_one_h2_connection() {
    let t = HttpProxy::start(&[]);
    for round in 0..3 {
        let mut args: Vec<String> = strings(&[
            "--max-time",
            "3",
            "-w",
            "%{http_version} %{http_code} %{num_connects}\\n",
        ]);
        for i in 0..20 {
            args.extend(strings(&["-o", "/dev/null"]));
            args.push(t.url(&format!("/r{round}/{i}")));
        }
        let out = t.curl(&args);
        let text = out.stdout.clone();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20, "{text}\n{}\n{}", out.stderr, t.logs());
        for (i, l) in lines.iter().enumerate() {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(
                (f[0], f[1]),
                ("2", "200"),
                "request {i} of round {round}: {l}\n{text}\n{}",
                t.logs()
            );
            assert_eq!(
                f[2],
                if i == 0 { "1" } else { "0" },
                "a new connection: {text}"
            );
        }
        assert!(out.success(), "{}", out.stderr);
    }

    // many URLs as concurrent streams of one connection
    let mut args: Vec<String> = strings(&[
        "--parallel",
        "--parallel-max",
        "50",
        "--max-time",
        "5",
        "-w",
        "%{http_version} %{http_code}\\n",
    ]);
    for i in 0..50 {
        args.extend(strings(&["-o", "/dev/null"]));
        args.push(t.url(&format!("/p/{i}")));
    }
    let out = t.curl(&args);
    let text = out.stdout.clone();
    assert_eq!(
        text.lines().filter(|l| *l == "2 200").count(),
        50,
        "{text}\n{}\n{}",
        out.stderr,
        t.logs()
    );
}

/// Bodies of 12 MB both ways over HTTP/2 with curl, checked by SHA-256 on the far side.
#[test]
fn curl_h2_uploads_and_downloads_12_mb() {
    let t = HttpProxy::start(&[]);
    let dir = t.pki.dir.path();
    let body: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
    let upload = dir.join("upload.bin");
    std::fs::write(&upload, &body).unwrap();
    let want = sha256_hex(&body);
    for extra in [&["-X", "POST"][..], &["-X", "PUT"][..]] {
        let mut args = vec![
            "--max-time",
            "30",
            "-H",
            "content-type: application/octet-stream",
        ];
        args.extend(extra);
        let data = format!("@{}", upload.display());
        args.extend(["--data-binary", data.as_str(), "-w", "\\n%{http_version}"]);
        let out = curl_mtls(&t.pki, Some("alice"), &t.url("/sha"), &args);
        let text = out.stdout.clone();
        assert!(out.success(), "{}\n{}", out.stderr, t.logs());
        let (json, version) = text.rsplit_once('\n').unwrap();
        assert_eq!(version, "2", "curl did not use HTTP/2: {text}");
        let got: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(got["len"], 12_000_000, "{json}");
        assert_eq!(got["sha256"], want.as_str(), "the backend saw another body");
    }
    let n = 12_000_000usize;
    let down = dir.join("down.bin");
    let out = curl_mtls(
        &t.pki,
        Some("alice"),
        &t.url(&format!("/bytes/{n}")),
        &[
            "--max-time",
            "30",
            "-o",
            &down.display().to_string(),
            "-w",
            "%{http_version}",
        ],
    );
    assert!(out.success(), "{}\n{}", out.stderr, t.logs());
    assert_eq!(out.stdout, "2");
    let got = std::fs::read(&down).unwrap();
    let want: Vec<u8> = (0..n).map(|i| (i % 256) as u8).collect();
    assert!(got == want, "download differs ({} bytes)", got.len());
}

/// nghttp (libnghttp2's client) with a client certificate: many streams at once, an upload,
/// and a graceful drain: SIGTERM while a stream is in flight gives GOAWAY and the stream
/// still completes.
#[test]
fn nghttp_streams_upload_and_goaway_on_drain() {
    let nghttp = require_tool("nghttp", "nghttp2-client");
    let t = HttpProxy::start(&[]);
    let cert = t.pki.p("alice.pem");
    let key = t.pki.p("alice.key");
    let tls = [format!("--cert={cert}"), format!("--key={key}")];

    let urls: Vec<String> = (0..40).map(|i| t.url(&format!("/n/{i}"))).collect();
    let out = run_with_timeout(
        Command::new(&nghttp)
            .args(&tls)
            .args(["-n", "-s", "-t", "5"])
            .args(&urls),
        None,
        Duration::from_secs(30),
    );
    assert!(out.success(), "{out}\n{}", t.logs());
    // -s prints one line per response with its status
    let answered = out.stdout.lines().filter(|l| l.contains(" 200 ")).count();
    assert_eq!(answered, 40, "{out}\n{}", t.logs());

    let body = t.pki.dir.path().join("nghttp-body.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&body, &data).unwrap();
    let out = run_with_timeout(
        Command::new(&nghttp)
            .args(&tls)
            .args(["-t", "10", "-d"])
            .arg(&body)
            .arg(t.url("/sha")),
        None,
        Duration::from_secs(30),
    );
    assert!(out.success(), "{out}\n{}", t.logs());
    assert!(
        out.stdout.contains(&sha256_hex(&data)),
        "the backend saw another body: {out}"
    );

    // graceful drain: the stream in flight finishes, the client is told with GOAWAY
    let mut child = Command::new(&nghttp)
        .args(&tls)
        .args(["-n", "-v", "-t", "10"])
        .arg(t.url("/drip/2000"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = read_in_background(child.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(600));
    t.proxy.signal("TERM");
    let status = wait_child(&mut child, Duration::from_secs(15));
    let status = status.expect("nghttp hung after the drain");
    let text = String::from_utf8_lossy(&stdout.join().unwrap()).into_owned();
    assert!(status.success(), "{text}\n{}", t.logs());
    assert!(text.contains("recv GOAWAY"), "no GOAWAY: {text}");
    let data_bytes: usize = text
        .lines()
        .filter(|l| l.contains("recv DATA frame"))
        .filter_map(|l| {
            l.split("length=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert_eq!(data_bytes, 32768, "the in-flight stream was cut: {text}");
    assert!(
        text.contains("END_STREAM") && !text.contains("recv RST_STREAM"),
        "{text}"
    );
}

/// The Python h2 client: sequential requests, flow control (a 20 MB upload, a slow reader,
/// a stream stalled on its window while another is served), RST_STREAM from either side,
/// 150 concurrent streams, large and repeated headers, trailers.
#[test]
fn python_h2_client_flow_control_resets_concurrency_headers_trailers() {
    let t = HttpProxy::start(&[]);
    let limit = Duration::from_secs(120);
    let r = t.h2client(&["sequential", "200"], limit);
    assert_eq!(r["requests"], 200);
    let r = t.h2client(&["flow"], limit);
    assert_eq!(r["upload"], 20_000_000);
    let r = t.h2client(&["rst"], limit);
    assert_eq!(r["client_reset"], true);
    let r = t.h2client(&["concurrent", "150"], limit);
    assert_eq!(r["streams"], 150);
    t.h2client(&["headers"], limit);
    let r = t.h2client(&["trailers"], limit);
    assert!(r["trailers"]["x-checksum"].is_string(), "{r}");
    // the proxy counted every answer: 200 + 4 (flow) + 4 (rst) + 150 + 21 + 1
    let m = metrics_on(t.admin);
    let answered = metric_sum(&m, "twoway_proxy_http_responses_total{", &[]);
    assert_eq!(answered, 380.0, "{m}");
}

/// Soak: one HTTP/2 connection with thousands of sequential and interleaved requests, and
/// one HTTP/1.1 keep-alive connection with thousands of sequential ones; every request
/// answered within its deadline, every body checked.
#[test]
fn soak_one_h2_and_one_http11_connection() {
    let t = HttpProxy::start(&[]);
    let r = t.h2client(&["soak", "3000", "3000"], Duration::from_secs(300));
    assert_eq!(r["interleaved"], 3000);
    let r = t.h2client(&["h1soak", "3000"], Duration::from_secs(300));
    assert_eq!(r["requests"], 3000);
}

/// `proxy client` in front of `proxy server --http`: an app speaking HTTP/1.1 keep-alive and
/// one speaking HTTP/2 with prior knowledge (the server side sniffs the preface) through
/// both proxies, sequential and interleaved, every answer checked.
#[test]
fn soak_through_client_mode() {
    let t = HttpProxy::start(&[]);
    let local = free_port();
    let admin = free_port();
    let client = proxy(
        t.pki.dir.path(),
        &strings(&[
            "client",
            "--listen",
            &format!("127.0.0.1:{local}"),
            "--target",
            &format!("localhost:{}", t.port),
            "--cert",
            &t.pki.p("alice.pem"),
            "--key",
            &t.pki.p("alice.key"),
            "--server-ca",
            &t.pki.p("ca.pem"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ]),
        admin,
    );
    let logs = format!("{}\n--- client proxy ---\n{}", t.logs(), client.log());
    for mode in [&["h1soak", "2000"][..], &["soak", "1500", "1500"][..]] {
        let mut cmd = Command::new(python_h2());
        cmd.arg(support("h2client.py"))
            .args(mode)
            .args(["--port", &local.to_string(), "--plain"]);
        run_json(&mut cmd, Duration::from_secs(300), &logs);
    }
}

/// A client refused in the handshake reads the TLS alert in every mode and protocol: curl
/// sends its first request (the HTTP/2 preface, or an HTTP/1.1 head) right after its
/// Finished, and closing on those unread bytes used to reset the connection before the
/// alert was read ("getpeername() failed", "Connection reset by peer").
#[test]
fn refused_clients_read_the_alert_over_h2_and_http11() {
    let t = HttpProxy::start(&["--allow", "spiffe://example.org/ns/prod/*"]);
    let url = t.url("/");
    for (who, alert) in [
        (None, "alert certificate required"),
        (Some("bob"), "alert access denied"),
    ] {
        for proto in ["--http2", "--http1.1"] {
            for i in 0..10 {
                let out = curl_mtls(&t.pki, who, &url, &[proto]);
                let err = out.stderr.clone();
                assert!(
                    !out.success() && err.contains(alert),
                    "{who:?} {proto} try {i}: expected `{alert}`, curl said: {err}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Route rules against path, method and header tricks
// ---------------------------------------------------------------------------------------

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
            let text = out.stdout.clone();
            assert!(text.ends_with("\n403"), "bob {proto} {target}: {text}");
            let out = curl_mtls(
                &t.pki,
                Some("alice"),
                &t.url(target),
                &[proto, "--path-as-is", "-w", "\n%{http_code}"],
            );
            assert_eq!(out.stdout, "ok /admin/x\n200", "alice {proto} {target}");
        }
        let out = curl_mtls(
            &t.pki,
            Some("bob"),
            &t.url("/%2fadmin/x"),
            &[proto, "--path-as-is", "-w", "\n%{http_code}"],
        );
        assert!(out.stdout.ends_with("\n400"), "{proto}: {}", out.stdout);
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
        let r = t.h2client_as("bob", &["request", m, "/ops/x"], Duration::from_secs(30));
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
    let request = ["request", "GET", "/", "--header", "host:evil"];
    let r = t.h2client_as("bob", &request, Duration::from_secs(30));
    assert_eq!(r["status"], 400, "{r}");
}

// ---------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------

/// ws.py's WebSocket echo server on a free port.
fn ws_backend(py: &std::path::Path, pki: &Pki) -> (Server, u16) {
    let port = free_port();
    let log = pki.dir.path().join("ws-server.log");
    let mut cmd = Command::new(py);
    cmd.arg(support("ws.py"))
        .args(["server", &port.to_string()]);
    let mut backend = Server::spawn("ws.py", &mut cmd, &log);
    backend.wait_for_port_within(port, Duration::from_secs(15));
    (backend, port)
}

/// The Python `websockets` client and server through the proxy (RFC 6455 over HTTP/1.1):
/// 10,000 messages echoed in order, a 16 MiB message whole, a close started by the client
/// and one started by the server; the backend saw the identity headers on the upgrade
/// request, and a client the routes refuse never reaches it.
#[test]
fn websocket_client_and_server_through_the_proxy() {
    let py = python_with("websockets");
    let pki = Pki::new();
    let (backend, ws_port) = ws_backend(&py, &pki);
    let p = ProxyServer::start(
        &pki,
        &format!("127.0.0.1:{ws_port}"),
        &["--http", "--allow", ALICE],
    );
    let client = |who: &str| {
        let mut cmd = Command::new(&py);
        cmd.arg(support("ws.py"))
            .arg("client")
            .args(["--port", &p.port.to_string()])
            .args(["--ca", &pki.p("ca.pem")])
            .args(["--cert", &pki.p(&format!("{who}.pem"))])
            .args(["--key", &pki.p(&format!("{who}.key"))]);
        cmd
    };
    let logs = || format!("{}\n{}", p.proc.log(), backend.log());
    let r = run_json(&mut client("alice"), Duration::from_secs(120), &logs());
    assert_eq!(r["messages"], 10_000, "{r}");
    assert_eq!(r["big"], 16 << 20, "{r}");
    assert_eq!(
        (r["client_close"].clone(), r["server_close"].clone()),
        (1000.into(), 4000.into()),
        "{r}"
    );
    let seen = backend.log();
    assert!(
        seen.contains(r#""x-client-identity": "spiffe://example.org/ns/prod/sa/alice""#),
        "{seen}"
    );
    // bob is not allowed: refused in the TLS handshake, nothing reaches the backend
    let handshakes = seen.matches("x-client-identity").count();
    let out = run_with_timeout(&mut client("bob"), None, Duration::from_secs(30));
    assert!(!out.success(), "{out}");
    assert_eq!(
        backend.log().matches("x-client-identity").count(),
        handshakes,
        "{}",
        logs()
    );
}

#[test]
fn a_refused_upgrade_and_an_idle_websocket() {
    let py = python_with("websockets");
    let pki = Pki::new();
    let (backend, ws_port) = ws_backend(&py, &pki);
    let p = ProxyServer::start(
        &pki,
        &format!("127.0.0.1:{ws_port}"),
        &["--http", "--allow", ALICE, "--idle-timeout", "2"],
    );
    let client = |mode: &str| {
        let mut cmd = Command::new(&py);
        cmd.arg(support("ws.py"))
            .arg(mode)
            .args(["--port", &p.port.to_string()])
            .args(["--ca", &pki.p("ca.pem")])
            .args(["--cert", &pki.p("alice.pem")])
            .args(["--key", &pki.p("alice.key")]);
        cmd
    };
    let logs = || format!("{}\n{}", p.proc.log(), backend.log());
    // the backend answers the upgrade with 403: the client gets that answer, not a tunnel
    let r = run_json(&mut client("refused"), Duration::from_secs(30), &logs());
    assert_eq!(r["status"], 403, "{r}\n{}", logs());
    // a WebSocket that never sends anything is closed by the proxy's idle timeout (2 s),
    // not held for ever
    let r = run_json(
        client("idle").args(["--wait", "20"]),
        Duration::from_secs(40),
        &logs(),
    );
    assert_eq!(r["closed"], true, "{r}\n{}", logs());
    let after = r["after"].as_f64().unwrap();
    assert!((1.5..15.0).contains(&after), "closed after {after} s: {r}");
    // the proxy still serves: a full exchange works afterwards
    let r = run_json(
        client("client").args(["--messages", "10", "--big", "1024"]),
        Duration::from_secs(60),
        &logs(),
    );
    assert_eq!(r["messages"], 10, "{r}");
}

const WS_ROUTES: &str = r#"
[[server.route]]
prefix = "/ws"
allow = ["spiffe://example.org/ns/prod/sa/alice"]

[[server.route]]
prefix = "/"
"#;

/// WebSockets over HTTP/2 (RFC 8441) from the `h2` package's client, relayed to the
/// `websockets` server over HTTP/1.1: the proxy's SETTINGS offer the extended CONNECT; two
/// WebSockets on one HTTP/2 connection carry 2,000 messages echoed in order on one while a
/// 4 MiB message is echoed whole on the other; a close started by the client and one by
/// the server each end their stream, none reset. The backend saw the identity headers on
/// the upgrade; the route rules apply to the CONNECT (bob may connect, but not to /ws:
/// 403, nothing reaches the backend); an upgrade the backend refuses reaches the client as
/// the backend's answer.
#[test]
fn websocket_over_http2_extended_connect_through_the_proxy() {
    let py = python_with("websockets");
    python_with("h2");
    let pki = Pki::new();
    let (backend, ws_port) = ws_backend(&py, &pki);
    let p = proxy_with(&pki, &format!("127.0.0.1:{ws_port}"), WS_ROUTES);
    let client = |who: &str, args: &[&str]| {
        let mut cmd = Command::new(&py);
        cmd.arg(support("ws.py"))
            .arg("h2")
            .args(["--port", &p.port.to_string()])
            .args(["--ca", &pki.p("ca.pem")])
            .args(["--cert", &pki.p(&format!("{who}.pem"))])
            .args(["--key", &pki.p(&format!("{who}.key"))])
            .args(args);
        cmd
    };
    let logs = || format!("{}\n{}", p.proc.log(), backend.log());
    let r = run_json(
        &mut client("alice", &["--messages", "2000", "--big", "4194304"]),
        Duration::from_secs(120),
        &logs(),
    );
    assert_eq!(r["status"], serde_json::json!([200, 200]), "{r}");
    assert_eq!(r["messages"], 2000, "{r}");
    assert_eq!(r["big"], 4 << 20, "{r}");
    assert_eq!(
        (r["client_close"].clone(), r["server_close"].clone()),
        (1000.into(), 4000.into()),
        "{r}"
    );
    assert_eq!(
        r["reset"],
        serde_json::json!([]),
        "streams were reset: {r}\n{}",
        logs()
    );
    let seen = backend.log();
    let upgrades = seen
        .matches(r#""x-client-identity": "spiffe://example.org/ns/prod/sa/alice""#)
        .count();
    assert_eq!(
        upgrades, 2,
        "the backend did not see both upgrades as alice:\n{seen}"
    );

    // bob reaches the proxy but the routes keep /ws for alice: 403 to the CONNECT itself
    let r = run_json(&mut client("bob", &[]), Duration::from_secs(30), &logs());
    assert_eq!(r["status"], 403, "{r}\n{}", logs());
    assert_eq!(
        backend.log().matches("x-client-identity").count(),
        upgrades,
        "a refused CONNECT reached the backend:\n{}",
        logs()
    );
    // the backend refuses the upgrade of /refuse: its 403 reaches the client
    let r = run_json(
        &mut client("bob", &["--path", "/refuse"]),
        Duration::from_secs(30),
        &logs(),
    );
    assert_eq!(r["status"], 403, "{r}\n{}", logs());
    // a plain CONNECT (a tunnel) is not offered
    let r = run_json(
        &mut client("alice", &["--path", "CONNECT"]),
        Duration::from_secs(30),
        &logs(),
    );
    assert_eq!(r["status"], 501, "{r}\n{}", logs());
    assert!(
        backend.log().contains(r#"{"refused": "/refuse"}"#),
        "the 403 was not the backend's:\n{}",
        logs()
    );
}

// ---------------------------------------------------------------------------------------
// gRPC and HTTP/2 to the backend
// ---------------------------------------------------------------------------------------

/// The grpcio server of `tests/support/grpc_peer.py` (h2c) on a free port.
fn grpc_server(dir: &std::path::Path) -> (Server, u16) {
    let py = python_with("grpc");
    let port = free_port();
    let log = dir.join(format!("grpc-server-{port}.log"));
    let mut cmd = Command::new(py);
    cmd.arg(support("grpc_peer.py"))
        .args(["server", &port.to_string()]);
    let mut server = Server::spawn("grpc_peer.py server", &mut cmd, &log);
    server.wait_for_port_within(port, Duration::from_secs(20));
    (server, port)
}

/// A proxy from a config file: one HTTP-mode listener in front of `backend` with `extra`
/// TOML (keys, then `[[server.route]]` tables).
fn proxy_with(pki: &Pki, backend: &str, extra: &str) -> ProxyServer {
    let (port, admin) = (free_port(), free_port());
    let toml = format!(
        "[[server]]\nlisten = \"127.0.0.1:{port}\"\nbackend = {backend:?}\n\
         cert = {:?}\nkey = {:?}\nclient_ca = {:?}\nhttp = true\n{extra}\n",
        pki.p("server.pem"),
        pki.p("server.key"),
        pki.p("ca.pem"),
    );
    let file = pki.path(&format!("proxy-{port}.toml"));
    std::fs::write(&file, toml).unwrap();
    let args = strings(&[
        "--config",
        &file.display().to_string(),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ]);
    let proc = proxy(pki.dir.path(), &args, admin);
    ProxyServer { proc, port, admin }
}

/// grpc_peer.py's client as `who` against the proxy; its JSON line.
fn grpc_client(pki: &Pki, who: &str, port: u16, scenario: &str, logs: &str) -> serde_json::Value {
    let mut cmd = Command::new(python_with("grpc"));
    cmd.arg(support("grpc_peer.py"))
        .arg("client")
        .args(["--port", &port.to_string()])
        .args(["--ca", &pki.p("ca.pem")])
        .args(["--cert", &pki.p(&format!("{who}.pem"))])
        .args(["--key", &pki.p(&format!("{who}.key"))])
        .arg(scenario);
    run_json(&mut cmd, Duration::from_secs(60), logs)
}

/// Waits (at most 5 s) for `line` in `server`'s log.
fn log_shows(server: &Server, line: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if server.log().lines().any(|l| l == line) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

const GRPC_ROUTES: &str = r#"backend_protocol = "h2c"

[[server.route]]
prefix = "/twoway.admin.Secret"
allow = ["spiffe://example.org/ns/dev/sa/bob"]

[[server.route]]
prefix = "/"
"#;

/// A grpcio client (mTLS, alice's certificate) and a grpcio server (h2c) through the proxy:
/// unary with trailing metadata and an error status, server streaming of 12.5 MiB,
/// client streaming of 5 MB, a bidirectional ping-pong (each message sent only after the
/// previous answer arrived: nothing may be buffered whole); a method the routes refuse
/// seen as PERMISSION_DENIED; a deadline that fires (DEADLINE_EXCEEDED for the client, the
/// backend sees the deadline and the cancellation); a stream cancelled by the client ends
/// on the backend too.
#[test]
fn grpc_calls_deny_deadline_and_cancel_through_the_proxy() {
    let pki = Pki::new();
    let (backend, bport) = grpc_server(pki.dir.path());
    let p = proxy_with(&pki, &format!("127.0.0.1:{bport}"), GRPC_ROUTES);
    let logs = || format!("{}\n--- grpc server ---\n{}", p.log(), backend.log());

    let r = grpc_client(&pki, "alice", p.port, "calls", &logs());
    assert_eq!(r["unary"], format!("echo:hello id={ALICE}"), "{r}");
    assert_eq!(r["unary_code"], "OK", "{r}");
    assert_eq!(r["unary_trailers"]["x-trailer"], "unary-done", "{r}");
    assert_eq!(r["fail"]["code"], "NOT_FOUND", "{r}");
    assert_eq!(r["fail"]["details"], "no such thing: widget", "{r}");
    assert_eq!(
        r["count"],
        serde_json::json!([200, 200 * 65536, true]),
        "{r}"
    );
    assert_eq!(r["sum"], "50 5000000", "{r}");
    assert_eq!(r["chat"], serde_json::json!([100, "M0", "M99"]), "{r}");

    let calls = backend.log().matches("call Get").count();
    let r = grpc_client(&pki, "alice", p.port, "denied", &logs());
    // grpc-status 7 from the proxy, not an HTTP 403 the client maps to the same code
    assert_eq!(r["denied"]["code"], "PERMISSION_DENIED", "{r}");
    assert_eq!(
        r["denied"]["details"], "denied by the proxy's route rules for this client identity",
        "{r}"
    );
    assert_eq!(
        backend.log().matches("call Get").count(),
        calls,
        "{}",
        logs()
    );
    // bob may call it
    let r = grpc_client(&pki, "bob", p.port, "denied", &logs());
    assert_eq!(r["denied"], "allowed", "{r}");

    let r = grpc_client(&pki, "alice", p.port, "deadline", &logs());
    assert_eq!(r["deadline"]["code"], "DEADLINE_EXCEEDED", "{r}");
    assert!(r["seconds"].as_f64().is_some_and(|s| s < 5.0), "{r}");
    assert!(log_shows(&backend, "cancelled Slow"), "{}", logs());
    // grpc-timeout reached the backend: it knew its deadline (≤ 1 s) from the start
    let remaining: f64 = backend
        .log()
        .lines()
        .find_map(|l| l.strip_prefix("deadline Slow "))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the backend saw no deadline\n{}", logs()));
    assert!(remaining > 0.0 && remaining <= 1.0, "{remaining}");

    let r = grpc_client(&pki, "alice", p.port, "cancel", &logs());
    assert_eq!(r["got"], serde_json::json!(["tick 0", "tick 1"]), "{r}");
    assert_eq!(r["cancelled"], "CANCELLED", "{r}");
    assert!(log_shows(&backend, "cancelled Ticks"), "{}", logs());
    assert!(!backend.log().contains("finished Ticks"), "{}", logs());
}

/// A gRPC unary call framed by hand (5-byte prefix) and POSTed by curl: over HTTP/2 and over
/// HTTP/1.1, both reaching the h2c gRPC server through the proxy; the denied call over
/// HTTP/2 is a trailers-only gRPC answer, a denied plain request still a 403.
#[test]
fn curl_h2_and_http11_reach_an_h2c_backend() {
    let pki = Pki::new();
    let (backend, bport) = grpc_server(pki.dir.path());
    let p = proxy_with(&pki, &format!("127.0.0.1:{bport}"), GRPC_ROUTES);
    let logs = || format!("{}\n--- grpc server ---\n{}", p.log(), backend.log());
    let frame = pki.path("hello.grpc");
    let mut body = vec![0u8, 0, 0, 0, 5];
    body.extend_from_slice(b"hello");
    std::fs::write(&frame, &body).unwrap();
    let url = |path: &str| format!("https://localhost:{}{path}", p.port);
    let grpc_post = |version: &str, path: &str, who: &str| {
        let headers = pki.path(&format!("headers-{version}-{who}.txt"));
        let out = curl_mtls(
            &pki,
            Some(who),
            &url(path),
            &[
                version,
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "--data-binary",
                &format!("@{}", frame.display()),
                "-D",
                &headers.display().to_string(),
                "-w",
                "\n%{http_version} %{http_code}",
            ],
        );
        assert!(out.success(), "{out}\n{}", logs());
        let head = std::fs::read_to_string(&headers).unwrap_or_default();
        (out.stdout, head.to_ascii_lowercase())
    };
    let want = format!("echo:hello id={ALICE}");

    let (out, head) = grpc_post("--http2", "/twoway.test.Echo/Unary", "alice");
    assert!(out.ends_with("\n2 200"), "{out}\n{}", logs());
    assert!(out.contains(&want), "{out}");
    assert!(
        head.contains("grpc-status: 0"),
        "no grpc-status trailer: {head}"
    );

    let (out, _) = grpc_post("--http1.1", "/twoway.test.Echo/Unary", "alice");
    assert!(out.ends_with("\n1.1 200"), "{out}\n{}", logs());
    assert!(out.contains(&want), "{out}");

    let (out, head) = grpc_post("--http2", "/twoway.admin.Secret/Get", "alice");
    assert!(out.ends_with("\n2 200"), "{out}");
    assert!(head.contains("grpc-status: 7"), "{head}");
    assert!(!backend.log().contains("call Get"), "{}", logs());
    // not a gRPC client: a plain 403
    let out = curl_mtls(
        &pki,
        Some("alice"),
        &url("/twoway.admin.Secret/Get"),
        &["--http2", "-w", "%{http_code}", "-o", "/dev/null"],
    );
    assert_eq!(out.stdout, "403", "{out}");
}

/// A backend that speaks the other HTTP version than `backend_protocol`: each client gets
/// a 502, the log names the mismatch and the setting, the metrics count it by reason.
#[test]
fn backend_protocol_mismatch_is_a_502_named_in_the_log_and_metrics() {
    let pki = Pki::new();
    let (http1, h1port) = backend_py(pki.dir.path());
    let (grpc, gport) = grpc_server(pki.dir.path());
    let h2c_to_http1 = proxy_with(
        &pki,
        &format!("127.0.0.1:{h1port}"),
        "backend_protocol = \"h2c\"",
    );
    let http1_to_h2 = proxy_with(&pki, &format!("127.0.0.1:{gport}"), "");
    let mismatches = |p: &ProxyServer| {
        metric_sum(
            &p.metrics(),
            "twoway_proxy_upstream_errors_by_reason_total{",
            &["reason=\"protocol_mismatch\""],
        )
    };
    for (p, setting, backend) in [
        (&h2c_to_http1, "backend_protocol = \"h2c\"", &http1),
        (&http1_to_h2, "backend_protocol = \"http1\"", &grpc),
    ] {
        for version in ["--http2", "--http1.1"] {
            let out = curl_mtls(
                &pki,
                Some("alice"),
                &format!("https://localhost:{}/x", p.port),
                &[version, "-w", "%{http_code}", "-o", "/dev/null"],
            );
            assert_eq!(out.stdout, "502", "{version}: {out}\n{}", p.log());
        }
        let log = p.log();
        assert!(
            log.contains("protocol mismatch") && log.contains(setting),
            "the log does not name the mismatch: {log}\n{}",
            backend.log()
        );
        // Both failures are counted. A backend that resets the connection (closing with the
        // preface unread) before its answer arrives cannot be told from any other failure,
        // so one of the two may count as "other"; the first bytes decide the rest.
        let other = metric_sum(
            &p.metrics(),
            "twoway_proxy_upstream_errors_by_reason_total{",
            &["reason=\"other\""],
        );
        assert!(
            mismatches(p) >= 1.0 && mismatches(p) + other == 2.0,
            "{}",
            p.metrics()
        );
    }
    // a gRPC client sees the 502 as UNAVAILABLE
    let r = grpc_client(
        &pki,
        "alice",
        h2c_to_http1.port,
        "unary",
        &h2c_to_http1.log(),
    );
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
}

/// `backend_protocol = "h2"`: the grpcio server over TLS (ALPN h2), verified against
/// `backend_ca`, serves the gRPC calls; a TLS backend that speaks only HTTP/1.1 (no h2 in
/// ALPN) is a 502 named as a protocol mismatch, and UNAVAILABLE to a gRPC client.
#[test]
fn grpc_over_tls_to_an_h2_backend_and_an_alpn_mismatch() {
    let py = python_with("grpc");
    let pki = Pki::new();
    let (gport, hport) = (free_port(), free_port());
    let tls = [pki.p("server.pem"), pki.p("server.key")];
    let mut cmd = Command::new(&py);
    cmd.arg(support("grpc_peer.py"))
        .args(["server", &gport.to_string(), "--tls"])
        .args(&tls);
    let log = pki.dir.path().join("grpc-tls.log");
    let mut grpc = Server::spawn("grpc_peer.py server --tls", &mut cmd, &log);
    grpc.wait_for_port_within(gport, Duration::from_secs(20));
    let mut cmd = Command::new(&py);
    cmd.arg(support("grpc_peer.py"))
        .args(["tls-http1", &hport.to_string()])
        .args(&tls);
    let log = pki.dir.path().join("tls-http1.log");
    let mut http1 = Server::spawn("grpc_peer.py tls-http1", &mut cmd, &log);
    http1.wait_for_port_within(hport, Duration::from_secs(20));
    let keys = format!(
        "backend_protocol = \"h2\"\nbackend_ca = {:?}\n",
        pki.p("ca.pem")
    );
    let p = proxy_with(&pki, &format!("127.0.0.1:{gport}"), &keys);
    let logs = || format!("{}\n--- grpc server ---\n{}", p.log(), grpc.log());
    let r = grpc_client(&pki, "alice", p.port, "calls", &logs());
    assert_eq!(r["unary"], format!("echo:hello id={ALICE}"), "{r}");
    assert_eq!(
        r["count"],
        serde_json::json!([200, 200 * 65536, true]),
        "{r}"
    );
    assert_eq!(r["chat"], serde_json::json!([100, "M0", "M99"]), "{r}");

    let p = proxy_with(&pki, &format!("127.0.0.1:{hport}"), &keys);
    let out = curl_mtls(
        &pki,
        Some("alice"),
        &format!("https://localhost:{}/x", p.port),
        &["-w", "%{http_code}", "-o", "/dev/null"],
    );
    assert_eq!(out.stdout, "502", "{out}\n{}", p.log());
    let log = p.log();
    assert!(
        log.contains("protocol mismatch") && log.contains("backend_protocol = \"h2\""),
        "{log}"
    );
    let r = grpc_client(&pki, "alice", p.port, "unary", &p.log());
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    let n = metric_sum(
        &p.metrics(),
        "twoway_proxy_upstream_errors_by_reason_total{",
        &["reason=\"protocol_mismatch\""],
    );
    assert_eq!(n, 2.0, "{}", p.metrics());
}
