//! `twoway ca serve`'s ACME directories for the ACME tests: a CA with a directory whose
//! validations go to 127.0.0.1, the real clients (certbot, lego, dehydrated) run with a time
//! limit, and what a test checks of an issued certificate in the inventory.

use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::Value;

use super::online::{OnlineCa, ONLINE_ADMIN};
use super::{require_tool, run_with_timeout, Output};

/// The longest a client run may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A serving CA with the ACME directory `test` (owner `team-web`), validations sent to
/// 127.0.0.1 on the given ports.
pub fn acme_ca(http01: u16, tlsalpn01: u16) -> OnlineCa {
    acme_ca_with(http01, tlsalpn01, "")
}

/// [`acme_ca`] with more keys in the directory's section.
pub fn acme_ca_with(http01: u16, tlsalpn01: u16, extra: &str) -> OnlineCa {
    let mut ca = OnlineCa::create("ACME Test", ONLINE_ADMIN, "", &[]);
    add_directory(&ca, http01, tlsalpn01, extra);
    ca.serve();
    ca
}

/// Appends the ACME directory `test` to ca.toml.
pub fn add_directory(ca: &OnlineCa, http01: u16, tlsalpn01: u16, extra: &str) {
    let path = ca.path("ca/ca.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[acme.directory]]\nname = \"test\"\nowner = \"team-web\"\nallow = [\"*.acme.test\"]\n\
         http01_port = {http01}\ntlsalpn01_port = {tlsalpn01}\nvalidation_address = \"127.0.0.1\"\n{extra}\n"
    ));
    std::fs::write(&path, text).unwrap();
}

pub fn directory_url(ca: &OnlineCa) -> String {
    format!("https://{}/acme/test/directory", ca.https)
}

/// The inventory record whose SANs hold `DNS:name`.
#[track_caller]
pub fn inventory_record(ca: &OnlineCa, name: &str) -> Value {
    let all = ca
        .tw("cert list --ca-dir ca --json --limit 1000")
        .ok()
        .json();
    let want = format!("DNS:{name}");
    all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["sans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == &want))
        })
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not in the inventory: {all}"))
}

/// The certificate at `cert` (lab path) verifies to the root, is in the inventory with
/// source acme and owner team-web.
#[track_caller]
pub fn check_issued(ca: &OnlineCa, cert: &str, name: &str) {
    let v = ca
        .openssl(&format!(
            "verify -CAfile ca/root.pem -untrusted ca/intermediate.pem {cert}"
        ))
        .ok();
    assert!(v.stdout.contains(": OK"), "{}", v.all());
    let rec = inventory_record(ca, name);
    assert_eq!(rec["source"], "acme", "{rec}");
    assert_eq!(rec["owner"], "team-web", "{rec}");
    assert!(
        rec["labels"]["acme_account"]
            .as_str()
            .is_some_and(|a| a.contains("/acme/test/acct/")),
        "{rec}"
    );
}

pub fn client(ca: &OnlineCa, program: &str, apt: &str) -> Command {
    let mut c = ca.command(require_tool(program, apt));
    c.env("REQUESTS_CA_BUNDLE", ca.p("ca/root.pem"))
        .env("LEGO_CA_CERTIFICATES", ca.p("ca/root.pem"));
    c
}

#[track_caller]
pub fn run_client(mut c: Command) -> Output {
    run_with_timeout(&mut c, None, CLIENT_TIMEOUT)
}

pub fn certbot_args(ca: &OnlineCa, port: u16) -> Vec<String> {
    [
        "--non-interactive",
        "--config-dir",
        &ca.p("certbot/config"),
        "--work-dir",
        &ca.p("certbot/work"),
        "--logs-dir",
        &ca.p("certbot/logs"),
        "--server",
        &directory_url(ca),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        [
            "--http-01-address".to_string(),
            "127.0.0.1".to_string(),
            "--http-01-port".to_string(),
            port.to_string(),
        ]
        .into_iter()
        .filter(|_| port != 0),
    )
    .collect()
}

pub fn certbot_certonly(
    ca: &OnlineCa,
    port: u16,
    config: &str,
    name: &str,
    extra: &[&str],
) -> Output {
    let mut c = client(ca, "certbot", "certbot (pip install certbot)");
    // --manual (dns-01 by a hook) instead of the standalone http-01 server
    let standalone = (!extra.contains(&"--manual")).then_some("--standalone");
    c.args([
        "certonly",
        "--agree-tos",
        "--register-unsafely-without-email",
    ])
    .args(standalone)
    .args(certbot_args(ca, port))
    .args(["--config-dir", &ca.p(config), "-d", name])
    .args(extra);
    run_client(c)
}

/// An http-01 responder on 127.0.0.1:`port` that answers one request with `key_auth`.
pub fn answer_http01(port: u16, key_auth: String) -> std::thread::JoinHandle<()> {
    let server = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{key_auth}",
            key_auth.len()
        );
        let _ = s.write_all(resp.as_bytes());
    })
}

/// RFC 9773's certID of the certificate (first PEM block) at `file` in the lab: the
/// authority key identifier and the serial's DER content octets, base64url each.
pub fn cert_id(ca: &OnlineCa, file: &str) -> String {
    let o = ca
        .openssl(&format!(
            "x509 -in {file} -noout -serial -ext authorityKeyIdentifier"
        ))
        .ok();
    let out = o.stdout;
    let serial = out
        .lines()
        .find_map(|l| l.strip_prefix("serial="))
        .unwrap()
        .trim()
        .to_string();
    let aki = out
        .lines()
        .skip_while(|l| !l.contains("Authority Key Identifier"))
        .nth(1)
        .unwrap()
        .trim()
        .trim_start_matches("keyid:")
        .replace(':', "");
    let unhex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut serial = unhex(&serial);
    if serial[0] & 0x80 != 0 {
        serial.insert(0, 0);
    }
    format!("{}.{}", B64.encode(unhex(&aki)), B64.encode(serial))
}

/// Every inventory record with `DNS:name`.
pub fn inventory_records(ca: &OnlineCa, name: &str) -> Vec<Value> {
    let all = ca
        .tw("cert list --ca-dir ca --json --limit 1000")
        .ok()
        .json();
    let want = format!("DNS:{name}");
    all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["sans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == &want))
        })
        .cloned()
        .collect()
}

/// A one-shot DNS server on 127.0.0.1: answers the next query with one TXT record, the
/// value `txt` gives when the query arrives.
pub fn dns_server(
    txt: impl FnOnce() -> String + Send + 'static,
) -> (u16, std::thread::JoinHandle<String>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        let value = txt();
        let q = &buf[..n];
        // the question's name, for the test to check
        let mut name = Vec::new();
        let mut i = 12;
        while q[i] != 0 {
            let l = q[i] as usize;
            name.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).into_owned());
            i += 1 + l;
        }
        let mut r = q[..i + 5].to_vec();
        r[2] |= 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, value.len() as u8 + 1]);
        r.push(value.len() as u8);
        r.extend_from_slice(value.as_bytes());
        sock.send_to(&r, from).unwrap();
        name.join(".")
    });
    (port, t)
}
