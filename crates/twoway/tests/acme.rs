//! The ACME server of `twoway ca serve` (RFC 8555) at the protocol level, with a client
//! built here from hand-made JWS: every bad request answered with its RFC 8555 problem
//! type (counted, nothing recorded), dns-01 through the configured resolver, account key
//! rollover, renewal information and `replaces`, EAB keys listed and revoked, and one
//! client's requests alternating between two replicas on one PostgreSQL database. The real
//! clients (certbot, lego, dehydrated) are in `acme_clients.rs`.
//!
//! Only 127.0.0.1: the directory's `validation_address` sends validations there. Every
//! client run is bounded in time.

mod common;

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::acme::*;
use common::free_port;
use common::online::{OnlineCa, ONLINE_ADMIN};
use serde_json::{json, Value};

/// A hand-made ACME client: a P-256 account key, JWS by RFC 8555, requests over curl.
struct Client<'a> {
    ca: &'a OnlineCa,
    /// `https://HOST:PORT` the URLs name.
    base: String,
    /// Replicas the requests go to in turn (curl --connect-to); empty: the URL's host.
    via: Vec<std::net::SocketAddr>,
    key: EcdsaKeyPair,
    kid: Option<String>,
    nonce: String,
    n: u32,
}

/// An answer: status, headers (lower-cased names), body.
struct Answer {
    status: u16,
    headers: String,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
        })
    }

    #[track_caller]
    fn problem(&self, kind: &str) {
        assert_eq!(
            self.body["type"],
            format!("urn:ietf:params:acme:error:{kind}"),
            "{} {}",
            self.status,
            self.body
        );
        assert!(self
            .header("content-type")
            .unwrap()
            .contains("problem+json"));
        assert!(
            self.header("replay-nonce").is_some(),
            "a refusal carries a nonce"
        );
    }
}

impl<'a> Client<'a> {
    fn new(ca: &'a OnlineCa) -> Client<'a> {
        Self::with(ca, format!("https://{}", ca.https), Vec::new())
    }

    fn with(ca: &'a OnlineCa, base: String, via: Vec<std::net::SocketAddr>) -> Client<'a> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let mut c = Client {
            ca,
            base,
            via,
            key,
            kid: None,
            nonce: String::new(),
            n: 0,
        };
        let a = c.curl("new-nonce", None, &["-I"]);
        assert_eq!(a.status, 200);
        assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));
        c.nonce = a.header("replay-nonce").unwrap();
        c
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/acme/test/{rest}", self.base)
    }

    fn jwk(&self) -> Value {
        let p = self.key.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
    }

    fn curl(&mut self, target: &str, body: Option<&[u8]>, extra: &[&str]) -> Answer {
        let url = if target.starts_with("https://") {
            target.to_string()
        } else {
            self.url(target)
        };
        self.n += 1;
        let f = self.ca.path(&format!("jws-{}.json", self.n));
        let data = format!("@{}", f.display());
        let root = self.ca.p("ca/root.pem");
        let mut args = vec!["-sS", "-m", "20", "-i", "--cacert", &root];
        if let Some(b) = body {
            std::fs::write(&f, b).unwrap();
            if !extra.iter().any(|e| e.starts_with("content-type")) {
                args.extend(["-H", "content-type: application/jose+json"]);
            }
            args.extend(["--data-binary", &data]);
        }
        args.extend(extra);
        let connect_to;
        if !self.via.is_empty() {
            let to = self.via[self.n as usize % self.via.len()];
            let from = self.base.trim_start_matches("https://");
            connect_to = format!("{from}:{to}");
            args.extend(["--connect-to", &connect_to]);
        }
        args.push(&url);
        let o = self.ca.tool_args("curl", &args).ok();
        let text = o.stdout.replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let status = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let a = Answer {
            status,
            headers: head.to_string(),
            body: serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        };
        if let Some(n) = a.header("replay-nonce") {
            self.nonce = n;
        }
        a
    }

    fn sign(&self, header: &Value, payload: &[u8]) -> Vec<u8> {
        let p = B64.encode(header.to_string());
        let pl = B64.encode(payload);
        let sig = self
            .key
            .sign(&SystemRandom::new(), format!("{p}.{pl}").as_bytes())
            .unwrap();
        json!({"protected": p, "payload": pl, "signature": B64.encode(sig.as_ref())})
            .to_string()
            .into_bytes()
    }

    fn header(&self, url: &str) -> Value {
        let mut h = json!({"alg": "ES256", "nonce": self.nonce, "url": url});
        match &self.kid {
            Some(k) => h["kid"] = k.clone().into(),
            None => h["jwk"] = self.jwk(),
        }
        h
    }

    /// A signed POST of `payload` (None: POST-as-GET) to `target`.
    fn post(&mut self, target: &str, payload: Option<&Value>) -> Answer {
        let url = if target.starts_with("https://") {
            target.to_string()
        } else {
            self.url(target)
        };
        let body = payload.map(|p| p.to_string()).unwrap_or_default();
        let jws = self.sign(&self.header(&url), body.as_bytes());
        self.curl(&url, Some(&jws), &[])
    }

    /// The account key's RFC 7638 thumbprint.
    fn thumbprint(&self) -> String {
        let j = self.jwk();
        let canon = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j["x"].as_str().unwrap(),
            j["y"].as_str().unwrap()
        );
        B64.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canon.as_bytes(),
        ))
    }

    /// POST-as-GET of `url` until its status is no longer `pending`/`processing` (10 s at
    /// most); the last answer's body.
    /// A new order for `name`; its URL, its body, and the `kind` challenge of its first
    /// authorization.
    fn order(&mut self, name: &str, kind: &str) -> (String, Value, Value) {
        let o = self.post(
            "new-order",
            Some(&json!({"identifiers": [{"type": "dns", "value": name}]})),
        );
        assert_eq!(o.status, 201, "{}", o.body);
        let url = o.header("location").unwrap();
        let az = self.post(o.body["authorizations"][0].as_str().unwrap(), None);
        let ch = az.body["challenges"]
            .as_array()
            .and_then(|all| all.iter().find(|x| x["type"] == kind))
            .unwrap_or_else(|| panic!("{kind} is offered: {}", az.body))
            .clone();
        (url, o.body, ch)
    }

    fn wait(&mut self, url: &str) -> Value {
        let mut body = Value::Null;
        for _ in 0..100 {
            body = self.post(url, None).body;
            if body["status"] != "pending" && body["status"] != "processing" {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        body
    }

    fn register(&mut self) {
        let a = self.post("new-account", Some(&json!({"termsOfServiceAgreed": true})));
        assert_eq!(a.status, 201, "{}", a.body);
        self.kid = a.header("location");
        assert!(a.header("link").unwrap().contains("rel=\"index\""));
    }
}

fn csr(names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    B64.encode(params.serialize_request(&key).unwrap().der())
}

#[test]
fn bad_requests_get_their_problem_types() {
    let port = free_port();
    let ca = acme_ca(port, free_port());
    let mut c = Client::new(&ca);
    let d = c.curl("directory", None, &[]);
    assert_eq!(d.body["newAccount"], c.url("new-account"));

    // alg none
    let url = c.url("new-account");
    let mut h = c.header(&url);
    h["alg"] = "none".into();
    let body = json!({"protected": B64.encode(h.to_string()), "payload": B64.encode("{}"), "signature": ""});
    let a = c.curl("new-account", Some(body.to_string().as_bytes()), &[]);
    a.problem("badSignatureAlgorithm");
    assert_eq!(a.status, 400);

    // a url that is not the request's
    let h = c.header(&c.url("new-order"));
    let jws = c.sign(&h, b"{}");
    c.curl("new-account", Some(&jws), &[])
        .problem("unauthorized");

    // jwk and kid together
    let mut h = c.header(&url);
    h["kid"] = c.url("acct/x").into();
    let jws = c.sign(&h, b"{}");
    c.curl("new-account", Some(&jws), &[]).problem("malformed");

    // a replayed nonce
    let h = c.header(&url);
    let jws = c.sign(&h, br#"{"termsOfServiceAgreed":true}"#);
    let first = c.curl("new-account", Some(&jws), &[]);
    assert_eq!(first.status, 201, "{}", first.body);
    let again = c.curl("new-account", Some(&jws), &[]);
    again.problem("badNonce");
    c.kid = first.header("location");

    // an oversized body, and another content type
    let big = vec![b' '; 70 * 1024];
    let a = c.curl("new-account", Some(&big), &[]);
    assert_eq!(a.status, 413);
    a.problem("malformed");
    let jws = c.sign(&c.header(&url), b"{}");
    let a = c.curl(
        "new-account",
        Some(&jws),
        &["-H", "content-type: application/json"],
    );
    assert_eq!(a.status, 415, "{} {}", a.headers, a.body);
    a.problem("malformed");

    // a name outside the allow list
    let a = c.post(
        "new-order",
        Some(&json!({"identifiers": [{"type": "dns", "value": "x.other.test"}]})),
    );
    a.problem("rejectedIdentifier");

    // finalize before the order is ready
    let a = c.post(
        "new-order",
        Some(&json!({"identifiers": [{"type": "dns", "value": "bad1.acme.test"}]})),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let order_url = a.header("location").unwrap();
    let finalize = a.body["finalize"].as_str().unwrap().to_string();
    let authz_url = a.body["authorizations"][0].as_str().unwrap().to_string();
    c.post(&finalize, Some(&json!({"csr": csr(&["bad1.acme.test"])})))
        .problem("orderNotReady");

    // a wrong key authorization: the challenge and the order turn invalid, with the reason
    let az = c.post(&authz_url, None);
    let ch = az.body["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "http-01")
        .unwrap()
        .clone();
    let token = ch["token"].as_str().unwrap().to_string();
    let server = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let answer = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        let n = s.read(&mut buf).unwrap_or(0);
        let req = String::from_utf8_lossy(&buf[..n]).to_string();
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nwrong.key");
        req
    });
    let a = c.post(ch["url"].as_str().unwrap(), Some(&json!({})));
    assert_eq!(a.status, 200, "{}", a.body);
    let req = answer.join().unwrap();
    assert!(
        req.starts_with(&format!("GET /.well-known/acme-challenge/{token} ")),
        "{req}"
    );
    let mut status = Value::Null;
    for _ in 0..100 {
        let a = c.post(ch["url"].as_str().unwrap(), None);
        status = a.body.clone();
        if a.body["status"] != "processing" && a.body["status"] != "pending" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status["status"], "invalid", "{status}");
    assert_eq!(
        status["error"]["type"],
        "urn:ietf:params:acme:error:unauthorized"
    );
    assert!(
        status["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("wrong.key"),
        "{status}"
    );
    assert_eq!(c.post(&order_url, None).body["status"], "invalid");

    // a CSR with a name the order does not hold: badCSR (the order needs to be ready)
    // is checked by certbot/lego paths; here the order is invalid, so orderNotReady
    c.post(
        &finalize,
        Some(&json!({"csr": csr(&["bad1.acme.test", "extra.acme.test"])})),
    )
    .problem("orderNotReady");

    // a validation target that redirects: the redirect is not followed, the challenge fails
    let (order2, _, ch) = c.order("bad2.acme.test", "http-01");
    let server = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let redirect = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n",
        );
    });
    c.post(ch["url"].as_str().unwrap(), Some(&json!({})));
    redirect.join().unwrap();
    let status = c.wait(ch["url"].as_str().unwrap());
    assert_eq!(status["status"], "invalid", "{status}");
    assert!(
        status["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("redirects"),
        "{status}"
    );
    assert_eq!(
        status["validationRecord"][0]["addressUsed"], "127.0.0.1",
        "{status}"
    );
    assert_eq!(c.post(&order2, None).body["status"], "invalid");

    // a key that is not the account's
    let mut other = Client::new(&ca);
    other.kid = c.kid.clone();
    let a = other.post(
        "new-order",
        Some(&json!({"identifiers": [{"type": "dns", "value": "a.acme.test"}]})),
    );
    a.problem("unauthorized");
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{}",
        a.body
    );

    // a deactivated account can do nothing more
    let acct = c.kid.clone().unwrap();
    let a = c.post(&acct, Some(&json!({"status": "deactivated"})));
    assert_eq!(a.body["status"], "deactivated", "{}", a.body);
    c.post(
        "new-order",
        Some(&json!({"identifiers": [{"type": "dns", "value": "a.acme.test"}]})),
    )
    .problem("unauthorized");

    // a request signed by an unknown account
    c.kid = Some(c.url("acct/nobody"));
    c.post(
        "new-order",
        Some(&json!({"identifiers": [{"type": "dns", "value": "a.acme.test"}]})),
    )
    .problem("accountDoesNotExist");
    // each refusal is counted by its problem type; nothing of this reached the inventory
    counted_and_unrecorded(
        &ca,
        &[
            "badNonce",
            "badSignatureAlgorithm",
            "orderNotReady",
            "rejectedIdentifier",
        ],
    );
}

/// Each of `kinds` was counted in /metrics as a refusal, and no `acme.test` name is in the
/// inventory.
#[track_caller]
fn counted_and_unrecorded(ca: &OnlineCa, kinds: &[&str]) {
    let m = ca.metrics();
    for kind in kinds {
        assert!(
            m.contains(&format!("twoway_ca_errors_total{{code=\"acme:{kind}\"}}")),
            "{kind}: {m}"
        );
    }
    assert!(ca
        .tw("cert list --ca-dir ca --json --limit 1000")
        .ok()
        .stdout
        .find("acme.test")
        .is_none());
}

#[test]
fn a_csr_with_an_extra_name_is_bad() {
    let port = free_port();
    let ca = acme_ca(port, free_port());
    let mut c = Client::new(&ca);
    c.register();
    let (order_url, body, ch) = c.order("ok1.acme.test", "http-01");
    let finalize = body["finalize"].as_str().unwrap().to_string();
    let thumb = c.thumbprint();
    let key_auth = format!("{}.{thumb}", ch["token"].as_str().unwrap());
    answer_http01(port, key_auth);
    c.post(ch["url"].as_str().unwrap(), Some(&json!({})));
    let mut order = Value::Null;
    for _ in 0..100 {
        order = c.post(&order_url, None).body;
        if order["status"] != "pending" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(order["status"], "ready", "{order}");
    let a = c.post(
        &finalize,
        Some(&json!({"csr": csr(&["ok1.acme.test", "extra.acme.test"])})),
    );
    a.problem("badCSR");
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("extra.acme.test"),
        "{}",
        a.body
    );
    // the order stays ready; the right CSR is issued
    let a = c.post(&finalize, Some(&json!({"csr": csr(&["ok1.acme.test"])})));
    assert_eq!(a.body["status"], "valid", "{}", a.body);
    let cert = c.post(a.body["certificate"].as_str().unwrap(), None);
    assert_eq!(cert.status, 200);
    assert!(cert
        .header("content-type")
        .unwrap()
        .contains("pem-certificate-chain"));
    assert!(cert.headers.contains("rel=\"up\""), "{}", cert.headers);
    assert!(cert.headers.contains("rel=\"index\""), "{}", cert.headers);
    let chain = cert.body.as_str().unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "{chain}");
    assert_eq!(inventory_record(&ca, "ok1.acme.test")["source"], "acme");
}

/// The `alternate` link target in an answer's headers, if any.
fn alternates(headers: &str) -> Vec<String> {
    headers
        .lines()
        .filter(|l| l.starts_with("link:") && l.contains("rel=\"alternate\""))
        .filter_map(|l| Some(l.split_once('<')?.1.split_once('>')?.0.to_string()))
        .collect()
}

#[test]
fn a_root_rotation_offers_the_chain_to_the_new_root_as_an_alternate() {
    let port = free_port();
    let mut ca = OnlineCa::create("ACME Test", ONLINE_ADMIN, "", &[]);
    add_directory(&ca, port, free_port(), "");
    std::fs::copy(ca.path("ca/root.pem"), ca.path("r1.pem")).unwrap();
    ca.tw("ca rotate root --ca-dir ca").ok();
    ca.tw("ca rotate intermediate --ca-dir ca").ok();
    ca.tw("ca rotate activate --ca-dir ca").ok();
    std::fs::copy(ca.path("ca/roots/r2/root.pem"), ca.path("r2.pem")).unwrap();
    ca.serve();
    let mut c = Client::new(&ca);
    c.register();
    let (order_url, body, ch) = c.order("alt.acme.test", "http-01");
    let key_auth = format!("{}.{}", ch["token"].as_str().unwrap(), c.thumbprint());
    answer_http01(port, key_auth);
    c.post(ch["url"].as_str().unwrap(), Some(&json!({})));
    assert_eq!(c.wait(&order_url)["status"], "ready");
    let finalize = body["finalize"].as_str().unwrap().to_string();
    let a = c.post(&finalize, Some(&json!({"csr": csr(&["alt.acme.test"])})));
    assert_eq!(a.body["status"], "valid", "{}", a.body);
    let url = a.body["certificate"].as_str().unwrap().to_string();

    // the default chain carries the new root certified by the old: old trust stores accept it
    let main = c.post(&url, None);
    assert_eq!(main.status, 200);
    let chain = main.body.as_str().unwrap().to_string();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 3, "{chain}");
    let alt_urls = alternates(&main.headers);
    assert_eq!(alt_urls, vec![format!("{url}/1")], "{}", main.headers);
    // the alternate ends at the new root, and links back to the default
    let alt = c.post(&alt_urls[0], None);
    assert_eq!(alt.status, 200, "{}", alt.body);
    assert!(alt.headers.contains("rel=\"up\""), "{}", alt.headers);
    assert_eq!(
        alternates(&alt.headers),
        vec![url.clone()],
        "{}",
        alt.headers
    );
    let alt_chain = alt.body.as_str().unwrap().to_string();
    assert_eq!(
        alt_chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "{alt_chain}"
    );
    assert_eq!(
        chain.split("-----END CERTIFICATE-----").next(),
        alt_chain.split("-----END CERTIFICATE-----").next(),
        "both chains start with the same certificate"
    );
    common::write(ca.path("main.pem"), &chain);
    common::write(ca.path("alt.pem"), &alt_chain);
    let verify = |anchor: &str, file: &str| {
        ca.openssl(&format!("verify -CAfile {anchor} -untrusted {file} {file}"))
    };
    for (anchor, file, ok) in [
        ("r1.pem", "main.pem", true),
        ("r2.pem", "main.pem", true),
        ("r2.pem", "alt.pem", true),
        ("r1.pem", "alt.pem", false),
    ] {
        let o = verify(anchor, file);
        assert_eq!(o.success(), ok, "{file} against {anchor}: {}", o.all());
    }
    // there is one alternate only; without a rotation there is none
    let none = c.post(&format!("{url}/2"), None);
    none.problem("malformed");
    assert_eq!(none.status, 404);
}

#[test]
fn a_certificate_downloaded_after_an_intermediate_rotation_comes_with_its_own_issuer() {
    let port = free_port();
    let mut ca = acme_ca(port, free_port());
    let mut c = Client::new(&ca);
    c.register();
    let (order_url, body, ch) = c.order("g1.acme.test", "http-01");
    let key_auth = format!("{}.{}", ch["token"].as_str().unwrap(), c.thumbprint());
    answer_http01(port, key_auth);
    c.post(ch["url"].as_str().unwrap(), Some(&json!({})));
    assert_eq!(c.wait(&order_url)["status"], "ready");
    let finalize = body["finalize"].as_str().unwrap().to_string();
    let a = c.post(&finalize, Some(&json!({"csr": csr(&["g1.acme.test"])})));
    assert_eq!(a.body["status"], "valid", "{}", a.body);
    let url = a.body["certificate"].as_str().unwrap().to_string();
    std::fs::copy(ca.path("ca/intermediate.pem"), ca.path("g1.pem")).unwrap();

    // g2 becomes active; the same account downloads the certificate g1 issued again
    let Client {
        base,
        via,
        key,
        kid,
        nonce,
        n,
        ..
    } = c;
    ca.stop();
    ca.tw("ca rotate intermediate --ca-dir ca").ok();
    ca.tw("ca rotate activate --ca-dir ca").ok();
    ca.restart(Duration::ZERO);
    let mut c = Client {
        ca: &ca,
        base,
        via,
        key,
        kid,
        nonce,
        n,
    };
    let again = c.post(&url, None);
    assert_eq!(again.status, 200, "{}", again.body);
    let chain = again.body.as_str().unwrap().to_string();
    let blocks: Vec<&str> = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    assert_eq!(blocks.len(), 2, "{chain}");
    assert_eq!(
        blocks[1],
        common::read(ca.path("g1.pem")),
        "the issuer sent is the one that signed it, not the active one"
    );
    common::write(ca.path("again.pem"), &chain);
    let v = ca.openssl("verify -CAfile ca/root.pem -untrusted again.pem again.pem");
    assert!(v.success(), "{}", v.all());
    assert!(alternates(&again.headers).is_empty(), "{}", again.headers);
    // `up` names that intermediate too
    let up = format!("{}/issuer/g1>;rel=\"up\"", c.url("").trim_end_matches('/'));
    assert!(again.headers.contains(&up), "{up}\n{}", again.headers);
    let issuer = c.curl(&c.url("issuer/g1"), None, &[]);
    assert_eq!(issuer.status, 200);
    assert_eq!(issuer.body.as_str(), Some(blocks[1]));
    assert_eq!(c.curl(&c.url("issuer/g9"), None, &[]).status, 404);
}

#[test]
fn dns01_through_the_configured_resolver() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (dns, answered) = dns_server(move || rx.recv_timeout(Duration::from_secs(20)).unwrap());
    let ca = acme_ca_with(
        free_port(),
        free_port(),
        &format!("dns_resolver = \"127.0.0.1:{dns}\""),
    );
    let mut c = Client::new(&ca);
    c.register();
    let (order_url, body, ch) = c.order("dns1.acme.test", "dns-01");
    let finalize = body["finalize"].as_str().unwrap().to_string();
    let key_auth = format!("{}.{}", ch["token"].as_str().unwrap(), c.thumbprint());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_auth.as_bytes());
    tx.send(B64.encode(digest)).unwrap();
    c.post(ch["url"].as_str().unwrap(), Some(&json!({})));
    assert_eq!(answered.join().unwrap(), "_acme-challenge.dns1.acme.test");
    let order = c.wait(&order_url);
    assert_eq!(order["status"], "ready", "{order}");
    let a = c.post(&finalize, Some(&json!({"csr": csr(&["dns1.acme.test"])})));
    assert_eq!(a.body["status"], "valid", "{}", a.body);
    assert_eq!(inventory_record(&ca, "dns1.acme.test")["source"], "acme");
}

#[test]
fn two_replicas_on_postgres_serve_one_directory() {
    let db = common::pg::TestDb::new();
    let (pa, pb, http01) = (free_port(), free_port(), free_port());
    let url = format!("\"{}\"", db.url());
    let mut ca = OnlineCa::create("ACME HA", ONLINE_ADMIN, "", &[("database", url.as_str())]);
    // [ca] url names replica A: both replicas build and check the ACME URLs from it
    let path = ca.path("ca/ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "[ca]\n",
        &format!("[ca]\nurl = \"https://127.0.0.1:{pa}\"\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    add_directory(&ca, http01, free_port(), "");
    let a = ca.spawn_server("", &format!("127.0.0.1:{pa}"), "127.0.0.1:0", &[], &[]);
    let b = ca.spawn_server("", &format!("127.0.0.1:{pb}"), "127.0.0.1:0", &[], &[]);
    let (a, b) = (a.ready(), b.ready());
    // every request goes to the other replica than the one before: each nonce is taken by
    // the replica that did not hand it out
    let mut c = Client::with(
        &ca,
        format!("https://127.0.0.1:{pa}"),
        vec![a.https, b.https],
    );
    c.register();
    let (order_url, _, ch) = c.order("ha1.acme.test", "http-01");
    let key_auth = format!("{}.{}", ch["token"].as_str().unwrap(), c.thumbprint());
    let responder = answer_http01(http01, key_auth);
    c.post(ch["url"].as_str().unwrap(), Some(&json!({})));
    let order = c.wait(&order_url);
    responder.join().unwrap();
    assert_eq!(order["status"], "ready", "{order}");
    let f = c.post(
        order["finalize"].as_str().unwrap(),
        Some(&json!({"csr": csr(&["ha1.acme.test"])})),
    );
    assert_eq!(f.body["status"], "valid", "{}", f.body);
    let cert = c.post(f.body["certificate"].as_str().unwrap(), None);
    assert_eq!(cert.status, 200, "{}", cert.body);
    assert_eq!(inventory_record(&ca, "ha1.acme.test")["source"], "acme");
    // renew-early is in the store: both replicas answer the moved window
    std::fs::write(ca.path("ha1.pem"), cert.body.as_str().unwrap()).unwrap();
    let id = cert_id(&ca, "ha1.pem");
    let serial = inventory_record(&ca, "ha1.acme.test")["serial"].clone();
    let r = ca
        .tw(&format!(
            "acme renew-early --ca-dir ca --serial {} --json",
            serial.as_str().unwrap()
        ))
        .ok()
        .json();
    assert_eq!(r["affected"], 1, "{r}");
    for _ in 0..2 {
        let a = c.curl(&c.url(&format!("renewal-info/{id}")), None, &[]);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(
            a.body["suggestedWindow"]["end"].as_str(),
            r["window_end"]
                .as_str()
                .map(|e| e.split('.').next().unwrap().trim_end_matches('Z'))
                .map(|e| format!("{e}Z"))
                .as_deref(),
            "{}",
            a.body
        );
    }
    // a nonce is single-use across replicas too
    let h = c.header(&c.url("new-order"));
    let jws = c.sign(
        &h,
        br#"{"identifiers":[{"type":"dns","value":"ha2.acme.test"}]}"#,
    );
    let first = c.curl("new-order", Some(&jws), &[]);
    assert_eq!(first.status, 201, "{}", first.body);
    c.curl("new-order", Some(&jws), &[]).problem("badNonce");
    for r in [&a, &b] {
        assert!(
            r.metrics().contains("route=\"acme\""),
            "both replicas served ACME"
        );
    }
}

#[test]
fn hmac_signatures_unknown_nonces_forged_csrs_and_silent_targets_are_refused() {
    let port = free_port();
    let ca = acme_ca(port, free_port());
    let mut c = Client::new(&ca);

    // HS256 on an account request: an account key is never a shared secret
    let url = c.url("new-account");
    let mut h = c.header(&url);
    h["alg"] = "HS256".into();
    let (p, pl) = (
        B64.encode(h.to_string()),
        B64.encode(br#"{"termsOfServiceAgreed":true}"#),
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"a shared secret");
    let mac = aws_lc_rs::hmac::sign(&key, format!("{p}.{pl}").as_bytes());
    let body = json!({"protected": p, "payload": pl, "signature": B64.encode(mac.as_ref())});
    let a = c.curl("new-account", Some(body.to_string().as_bytes()), &[]);
    a.problem("badSignatureAlgorithm");
    assert_eq!(a.status, 400);

    // a nonce the server never gave: badNonce, with a fresh one to retry with
    c.nonce = B64.encode([7u8; 16]);
    let a = c.post("new-account", Some(&json!({"termsOfServiceAgreed": true})));
    a.problem("badNonce");
    c.register();

    // a CSR whose signature does not verify, on a ready order: badCSR; the order stays
    // ready and nothing is issued
    let (order_url, body, ch) = c.order("sig1.acme.test", "http-01");
    let finalize = body["finalize"].as_str().unwrap().to_string();
    let key_auth = format!("{}.{}", ch["token"].as_str().unwrap(), c.thumbprint());
    let answered = answer_http01(port, key_auth);
    c.post(ch["url"].as_str().unwrap(), Some(&json!({})));
    answered.join().unwrap();
    assert_eq!(c.wait(&order_url)["status"], "ready");
    let mut der = B64.decode(csr(&["sig1.acme.test"])).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let a = c.post(&finalize, Some(&json!({"csr": B64.encode(&der)})));
    a.problem("badCSR");
    assert_eq!(a.status, 400);
    assert_eq!(c.post(&order_url, None).body["status"], "ready");

    // a validation target that accepts the connection and never answers: the challenge
    // fails once the validation's time is up, and says so
    let (order2, _, ch) = c.order("slow1.acme.test", "http-01");
    let server = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    server.set_nonblocking(true).unwrap();
    let silent = std::thread::spawn(move || {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < until {
            if let Ok((s, _)) = server.accept() {
                std::thread::sleep(Duration::from_secs(15));
                drop(s);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    c.post(ch["url"].as_str().unwrap(), Some(&json!({})));
    let mut status = Value::Null;
    for _ in 0..60 {
        status = c.post(ch["url"].as_str().unwrap(), None).body;
        if status["status"] != "pending" && status["status"] != "processing" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(status["status"], "invalid", "{status}");
    assert_eq!(
        status["error"]["type"], "urn:ietf:params:acme:error:connection",
        "{status}"
    );
    assert!(
        status["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within"),
        "{status}"
    );
    assert_eq!(c.post(&order2, None).body["status"], "invalid");
    assert!(silent.join().unwrap(), "the CA connected to the target");

    // each refusal is counted by its problem type; nothing reached the inventory
    counted_and_unrecorded(&ca, &["badNonce", "badSignatureAlgorithm", "badCSR"]);
}

fn p256() -> EcdsaKeyPair {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap()
}

fn jwk_of(k: &EcdsaKeyPair) -> Value {
    let p = k.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
}

/// A flattened JWS of `payload` signed by `key`.
fn jws_by(key: &EcdsaKeyPair, header: &Value, payload: &[u8]) -> Value {
    let p = B64.encode(header.to_string());
    let pl = B64.encode(payload);
    let sig = key
        .sign(&SystemRandom::new(), format!("{p}.{pl}").as_bytes())
        .unwrap();
    json!({"protected": p, "payload": pl, "signature": B64.encode(sig.as_ref())})
}

/// The inner JWS of a key change: signed by `signer`, naming `jwk` as the new key.
fn key_change(signer: &EcdsaKeyPair, jwk: &Value, url: &str, account: &str, old: &Value) -> Value {
    jws_by(
        signer,
        &json!({"alg": "ES256", "jwk": jwk, "url": url}),
        json!({"account": account, "oldKey": old})
            .to_string()
            .as_bytes(),
    )
}

impl Client<'_> {
    /// An order for `name` taken through http-01 (answered on `port`) and finalized: the
    /// certificate's PEM chain, saved at `file` in the lab.
    fn obtain(&mut self, port: u16, name: &str, extra: Value, file: &str) -> Answer {
        let mut payload = json!({"identifiers": [{"type": "dns", "value": name}]});
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        let o = self.post("new-order", Some(&payload));
        assert_eq!(o.status, 201, "{}", o.body);
        let order_url = o.header("location").unwrap();
        let az = self.post(o.body["authorizations"][0].as_str().unwrap(), None);
        let ch = az.body["challenges"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["type"] == "http-01"))
            .cloned()
            .unwrap_or_else(|| panic!("http-01 is offered: {}", az.body));
        let key_auth = format!("{}.{}", ch["token"].as_str().unwrap(), self.thumbprint());
        let responder = answer_http01(port, key_auth);
        self.post(ch["url"].as_str().unwrap(), Some(&json!({})));
        let order = self.wait(&order_url);
        responder.join().unwrap();
        assert_eq!(order["status"], "ready", "{order}");
        let f = self.post(
            order["finalize"].as_str().unwrap(),
            Some(&json!({"csr": csr(&[name])})),
        );
        assert_eq!(f.body["status"], "valid", "{}", f.body);
        let cert = self.post(f.body["certificate"].as_str().unwrap(), None);
        assert_eq!(cert.status, 200);
        std::fs::write(self.ca.path(file), cert.body.as_str().unwrap()).unwrap();
        o
    }

    /// The external account binding of this client's key with EAB key `kid`/`hmac`.
    fn eab(&self, kid: &str, hmac: &str) -> Value {
        let p = B64.encode(
            json!({"alg": "HS256", "kid": kid, "url": self.url("new-account")}).to_string(),
        );
        let pl = B64.encode(self.jwk().to_string());
        let key =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &B64.decode(hmac).unwrap());
        let tag = aws_lc_rs::hmac::sign(&key, format!("{p}.{pl}").as_bytes());
        json!({"protected": p, "payload": pl, "signature": B64.encode(tag.as_ref())})
    }
}

#[test]
fn account_key_rollover() {
    let port = free_port();
    let ca = acme_ca(port, free_port());
    let mut c = Client::new(&ca);
    let url = c.url("key-change");
    assert_eq!(c.curl("directory", None, &[]).body["keyChange"], url);
    c.register();
    let acct = c.kid.clone().unwrap();
    let new = p256();
    let new_jwk = jwk_of(&new);

    // oldKey is not the account's key
    let inner = key_change(&new, &new_jwk, &url, &acct, &jwk_of(&p256()));
    let a = c.post(&url, Some(&inner));
    a.problem("malformed");
    assert!(
        a.body["detail"].as_str().unwrap().contains("oldKey"),
        "{}",
        a.body
    );
    // the inner url is not the outer one
    let inner = key_change(&new, &new_jwk, &c.url("new-order"), &acct, &c.jwk());
    let a = c.post(&url, Some(&inner));
    a.problem("malformed");
    assert!(
        a.body["detail"].as_str().unwrap().contains("outer url"),
        "{}",
        a.body
    );
    // the inner JWS signed by the old key, naming the new one
    let inner = key_change(&c.key, &new_jwk, &url, &acct, &c.jwk());
    let a = c.post(&url, Some(&inner));
    a.problem("malformed");
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{}",
        a.body
    );
    // another account's name in the payload
    let inner = key_change(&new, &new_jwk, &url, &c.url("acct/other"), &c.jwk());
    c.post(&url, Some(&inner)).problem("malformed");
    // a key another account has: 409 naming that account
    let mut other = Client::new(&ca);
    other.register();
    let inner = key_change(&other.key, &other.jwk(), &url, &acct, &c.jwk());
    let a = c.post(&url, Some(&inner));
    assert_eq!(a.status, 409, "{}", a.body);
    a.problem("malformed");
    assert_eq!(a.header("location"), other.kid);

    // an order made before the change, validated after it
    let (early_order, _, early_ch) = c.order("kc2.acme.test", "http-01");
    // the change
    let inner = key_change(&new, &new_jwk, &url, &acct, &c.jwk());
    let a = c.post(&url, Some(&inner));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "valid");
    assert_eq!(a.header("location").as_deref(), Some(acct.as_str()));

    // the old key is refused, by kid and as a jwk
    let order = json!({"identifiers": [{"type": "dns", "value": "kc1.acme.test"}]});
    let a = c.post("new-order", Some(&order));
    a.problem("unauthorized");
    c.kid = None;
    c.post("new-account", Some(&json!({"onlyReturnExisting": true})))
        .problem("accountDoesNotExist");
    // the new key is the account's: it finds it, and a whole order goes through with it
    // (the key authorization carries the new key's thumbprint)
    c.key = new;
    let a = c.post("new-account", Some(&json!({"onlyReturnExisting": true})));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("location").as_deref(), Some(acct.as_str()));
    c.kid = Some(acct);
    c.obtain(port, "kc1.acme.test", json!({}), "kc1.pem");
    // the earlier order's challenge is answered with the new key's key authorization
    let key_auth = format!("{}.{}", early_ch["token"].as_str().unwrap(), c.thumbprint());
    let responder = answer_http01(port, key_auth);
    c.post(early_ch["url"].as_str().unwrap(), Some(&json!({})));
    let order = c.wait(&early_order);
    responder.join().unwrap();
    assert_eq!(order["status"], "ready", "{order}");
    check_issued(&ca, "kc1.pem", "kc1.acme.test");
    let audit = ca.tw("audit list --ca-dir ca --json").ok().stdout;
    assert!(audit.contains("acme.account.key-change"), "{audit}");
    assert!(ca
        .metrics()
        .contains("twoway_ca_errors_total{code=\"acme:malformed\"}"));
}

#[test]
fn renewal_information_and_replaces() {
    let port = free_port();
    let ca = acme_ca(port, free_port());
    let mut c = Client::new(&ca);
    let base = c.url("renewal-info");
    assert_eq!(c.curl("directory", None, &[]).body["renewalInfo"], base);
    c.register();
    c.obtain(port, "ari1.acme.test", json!({}), "ari1.pem");
    let id = cert_id(&ca, "ari1.pem");
    let old = inventory_record(&ca, "ari1.acme.test");

    // the window: the last third of the lifetime, 2/3 to 5/6 of it
    let a = c.curl(&format!("{base}/{id}"), None, &[]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("retry-after").as_deref(), Some("21600"));
    let w = &a.body["suggestedWindow"];
    let t = |v: &Value| {
        let o = ca
            .tool_args("date", &["-u", "-d", v.as_str().unwrap(), "+%s"])
            .ok();
        o.stdout.trim().parse::<i64>().unwrap()
    };
    let (nb, na) = (t(&old["not_before"]), t(&old["not_after"]));
    let life = na - nb;
    assert!((t(&w["start"]) - (nb + life * 2 / 3)).abs() <= 2, "{w}");
    assert!((t(&w["end"]) - (nb + life * 5 / 6)).abs() <= 2, "{w}");
    // malformed and unknown ids
    let a = c.curl(&format!("{base}/not-a-cert-id"), None, &[]);
    assert_eq!(a.status, 400);
    a.problem("malformed");
    let (aki, _) = id.split_once('.').unwrap();
    let a = c.curl(&format!("{base}/{aki}.AQIDBAUGBwg"), None, &[]);
    assert_eq!(a.status, 404, "{}", a.body);
    a.problem("malformed");

    // another account cannot replace it with a certificate for other names
    let mut other = Client::new(&ca);
    other.register();
    let a = other.post(
        "new-order",
        Some(&json!({"identifiers": [{"type": "dns", "value": "ari9.acme.test"}], "replaces": id})),
    );
    a.problem("unauthorized");
    // a replacing order: the new certificate names the old one, which is superseded
    let o = c.obtain(port, "ari1.acme.test", json!({"replaces": id}), "ari1b.pem");
    assert_eq!(o.body["replaces"], id.as_str(), "{}", o.body);
    let recs = inventory_records(&ca, "ari1.acme.test");
    assert_eq!(recs.len(), 2, "{recs:?}");
    let old_now = recs.iter().find(|r| r["serial"] == old["serial"]).unwrap();
    let new = recs.iter().find(|r| r["serial"] != old["serial"]).unwrap();
    assert_eq!(old_now["status"], "revoked", "{old_now}");
    assert_eq!(old_now["revocation_reason"], "superseded", "{old_now}");
    assert_eq!(new["status"], "active", "{new}");
    assert_eq!(new["labels"]["replaces"], old["serial"], "{new}");
    // not twice
    let a = c.post(
        "new-order",
        Some(&json!({"identifiers": [{"type": "dns", "value": "ari1.acme.test"}], "replaces": id})),
    );
    assert_eq!(a.status, 409, "{}", a.body);
    a.problem("alreadyReplaced");
    // renew-early moves the new certificate's window to the present
    let new_id = cert_id(&ca, "ari1b.pem");
    let r = ca
        .tw(&format!(
            "acme renew-early --ca-dir ca --serial {} --json",
            new["serial"].as_str().unwrap()
        ))
        .ok()
        .json();
    assert_eq!(r["affected"], 1, "{r}");
    let a = c.curl(&format!("{base}/{new_id}"), None, &[]);
    let end = t(&a.body["suggestedWindow"]["end"]);
    let now = t(&json!(ca
        .tool_args("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .ok()
        .stdout
        .trim()));
    assert!(end <= now && end > now - 120, "{}", a.body);
    let o = ca
        .tw("acme renew-early --ca-dir ca --serial 0badc0ffee0badc0ffee")
        .fails();
    assert!(o.all().contains("--serial"), "{}", o.all());
    let m = ca.metrics();
    assert!(m.contains("code=\"acme:alreadyReplaced\""), "{m}");
}

#[test]
fn eab_keys_are_listed_and_revoked() {
    let ca = acme_ca_with(free_port(), free_port(), "eab_required = true");
    let k1 = ca
        .tw("acme eab create --ca-dir ca --directory test --owner team-a --json")
        .ok()
        .json();
    let k2 = ca
        .tw("acme eab create --ca-dir ca --directory test --owner team-b --json")
        .ok()
        .json();
    let (kid1, kid2) = (k1["kid"].as_str().unwrap(), k2["kid"].as_str().unwrap());
    let list = ca.tw("acme eab list --ca-dir ca --json").ok();
    // never the key material
    for k in [&k1, &k2] {
        assert!(!list.stdout.contains(k["hmac_key"].as_str().unwrap()));
    }
    let items = list.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{items:?}");
    for i in &items {
        assert_eq!(i["status"], "unused", "{i}");
        assert_eq!(i["revoked"], false);
        assert_eq!(i["directory"], "test");
        assert!(i["created"].as_str().is_some(), "{i}");
    }

    let mut a = Client::new(&ca);
    let bind = a.eab(kid1, k1["hmac_key"].as_str().unwrap());
    let r = a.post(
        "new-account",
        Some(&json!({"termsOfServiceAgreed": true, "externalAccountBinding": bind})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    a.kid = r.header("location");
    let acct_id = a
        .kid
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let table = ca
        .tw("acme eab list --ca-dir ca --directory test")
        .ok()
        .stdout;
    let line = table.lines().find(|l| l.contains(kid1)).unwrap();
    assert!(line.contains(&format!("account {acct_id}")), "{table}");
    assert!(line.contains("team-a"), "{table}");
    let line = table.lines().find(|l| l.contains(kid2)).unwrap();
    assert!(line.contains("unused"), "{table}");

    // an unused key, revoked, binds nothing
    ca.tw(&format!("acme eab revoke --ca-dir ca {kid2}")).ok();
    let mut b = Client::new(&ca);
    let bind = b.eab(kid2, k2["hmac_key"].as_str().unwrap());
    let r = b.post(
        "new-account",
        Some(&json!({"termsOfServiceAgreed": true, "externalAccountBinding": bind})),
    );
    r.problem("unauthorized");
    assert!(
        r.body["detail"].as_str().unwrap().contains("revoked"),
        "{}",
        r.body
    );
    // a used key, revoked: the account bound with it is refused from then on
    let order = json!({"identifiers": [{"type": "dns", "value": "e1.acme.test"}]});
    assert_eq!(a.post("new-order", Some(&order)).status, 201);
    let o = ca
        .tw(&format!("acme eab revoke --ca-dir ca {kid1} --json"))
        .ok()
        .json();
    assert_eq!(o["account"], acct_id.as_str());
    let r = a.post("new-order", Some(&order));
    r.problem("unauthorized");
    assert!(
        r.body["detail"].as_str().unwrap().contains("revoked"),
        "{}",
        r.body
    );
    let items = ca.tw("acme eab list --ca-dir ca --json").ok().json();
    for i in items["items"].as_array().unwrap() {
        assert_eq!(i["revoked"], true, "{i}");
    }
    let o = ca
        .tw(&format!("acme eab revoke --ca-dir ca {kid1}"))
        .fails();
    assert!(o.all().contains("already revoked"), "{}", o.all());
    let o = ca.tw("acme eab revoke --ca-dir ca 00ff").fails();
    assert!(o.all().contains("eab list"), "{}", o.all());
    let audit = ca.tw("audit list --ca-dir ca --json").ok().stdout;
    assert_eq!(audit.matches("acme.eab.revoke").count(), 2, "{audit}");
}
