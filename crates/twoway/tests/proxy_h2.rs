//! HTTP/2 and keep-alive through `twoway proxy --http`, judged by independent clients: curl
//! (which picks h2 by itself), nghttp (Debian `nghttp2-client`) and a Python client on the
//! `h2` package from PyPI (`tests/support/h2client.py`), in front of a raw-socket Python
//! backend (`tests/support/backend.py`) whose answers the clients check byte for byte.
//!
//! Every request has its own deadline: a stall fails the test at once with what stalled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::*;

/// The reported bug: curl answered the first request of an HTTP/2 connection and then hung
/// on the next one. Here: sequential requests on one connection (curl reuses it for every
/// URL of one invocation), each with its own deadline; then many URLs in parallel streams.
#[test]
fn curl_sequential_and_parallel_requests_over_one_h2_connection() {
    let t = HttpProxy::start(&[]);
    for round in 0..3 {
        let mut args: Vec<String> = s(&[
            "--max-time",
            "3",
            "-w",
            "%{http_version} %{http_code} %{num_connects}\\n",
        ]);
        for i in 0..20 {
            args.extend(s(&["-o", "/dev/null"]));
            args.push(t.url(&format!("/r{round}/{i}")));
        }
        let out = t.curl(&args);
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20, "{text}\n{}\n{}", stderr(&out), t.logs());
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
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // many URLs as concurrent streams of one connection
    let mut args: Vec<String> = s(&[
        "--parallel",
        "--parallel-max",
        "50",
        "--max-time",
        "5",
        "-w",
        "%{http_version} %{http_code}\\n",
    ]);
    for i in 0..50 {
        args.extend(s(&["-o", "/dev/null"]));
        args.push(t.url(&format!("/p/{i}")));
    }
    let out = t.curl(&args);
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| *l == "2 200").count(),
        50,
        "{text}\n{}\n{}",
        stderr(&out),
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
        let text = stdout(&out);
        assert!(out.status.success(), "{}\n{}", stderr(&out), t.logs());
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
    assert!(out.status.success(), "{}\n{}", stderr(&out), t.logs());
    assert_eq!(stdout(&out), "2");
    let got = std::fs::read(&down).unwrap();
    let want: Vec<u8> = (0..n).map(|i| (i % 256) as u8).collect();
    assert!(got == want, "download differs ({} bytes)", got.len());
}

/// nghttp (libnghttp2's client) with a client certificate: many streams at once, an upload,
/// and a graceful drain: SIGTERM while a stream is in flight gives GOAWAY and the stream
/// still completes.
#[test]
fn nghttp_streams_upload_and_goaway_on_drain() {
    let nghttp = require("nghttp", "nghttp2-client");
    let t = HttpProxy::start(&[]);
    let cert = t.pki.p("alice.pem");
    let key = t.pki.p("alice.key");
    let tls = [format!("--cert={cert}"), format!("--key={key}")];

    let urls: Vec<String> = (0..40).map(|i| t.url(&format!("/n/{i}"))).collect();
    let out = common::run_with_timeout(
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
    let out = common::run_with_timeout(
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
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let pid = t.proxy.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "nghttp hung after the drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", t.logs());
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
    let m = metrics(t.admin);
    let answered: f64 = m
        .lines()
        .filter(|l| l.starts_with("twoway_proxy_http_responses_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
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
        &s(&[
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
                let err = stderr(&out);
                assert!(
                    !out.status.success() && err.contains(alert),
                    "{who:?} {proto} try {i}: expected `{alert}`, curl said: {err}"
                );
            }
        }
    }
}
