//! The test PKI: an rcgen CA with leaves for every client the tests play (valid, revoked,
//! expired, look-alike…), keys, CSRs and certificates made by openssl, what openssl reads
//! out of a certificate, and PEM through the `pem` crate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::process::{require_tool, run, run_with_timeout, COMMAND_TIMEOUT};

pub const ALICE: &str = "spiffe://example.org/ns/prod/sa/alice";
pub const BOB: &str = "spiffe://example.org/ns/dev/sa/bob";

/// A CA that can sign leaves and CRLs.
pub struct TestCa {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub pem: String,
}

impl TestCa {
    pub fn new(cn: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "twoway tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    pub fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    pub fn crl(&self, revoked: &[&[u8]]) -> String {
        self.crl_until(revoked, OffsetDateTime::now_utc() + time::Duration::days(7))
    }

    /// A CRL like [`TestCa::crl`] whose `nextUpdate` is `next_update`.
    pub fn crl_until(&self, revoked: &[&[u8]], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update,
            crl_number: SerialNumber::from_slice(&random_serial()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer()).unwrap().pem().unwrap()
    }
}

pub fn random_serial() -> Vec<u8> {
    // 16 bytes from the time and a counter are enough to be unique within a test run.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let mut v = vec![0x01];
    v.extend_from_slice(&t.to_be_bytes());
    v.extend_from_slice(&n.to_be_bytes()[1..]);
    v
}

/// A leaf certificate and its key, as PEM, plus its serial.
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub serial: Vec<u8>,
    pub der: Vec<u8>,
}

pub struct LeafSpec<'a> {
    pub cn: &'a str,
    pub sans: Vec<SanType>,
    pub eku: Vec<Eku>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub ca_flag: bool,
}

impl<'a> LeafSpec<'a> {
    pub fn client(cn: &'a str, uri: &str) -> Self {
        LeafSpec {
            cn,
            sans: vec![SanType::URI(uri.try_into().unwrap())],
            eku: vec![Eku::ClientAuth],
            not_before: OffsetDateTime::now_utc() - time::Duration::hours(1),
            not_after: OffsetDateTime::now_utc() + time::Duration::days(1),
            ca_flag: false,
        }
    }

    pub fn server() -> Self {
        LeafSpec {
            cn: "localhost",
            sans: vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ],
            eku: vec![Eku::ServerAuth],
            not_before: OffsetDateTime::now_utc() - time::Duration::hours(1),
            not_after: OffsetDateTime::now_utc() + time::Duration::days(1),
            ca_flag: false,
        }
    }

    pub fn sign(self, ca: &TestCa) -> Leaf {
        self.sign_key(ca, KeyPair::generate().unwrap())
    }

    pub fn sign_key(self, ca: &TestCa, key: KeyPair) -> Leaf {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.cn);
        dn.push(DnType::OrganizationalUnitName, "tests");
        params.distinguished_name = dn;
        params.subject_alt_names = self.sans;
        params.extended_key_usages = self.eku;
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        if self.ca_flag {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        } else {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        let cert = params.signed_by(&key, &ca.issuer()).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial,
            der: cert.der().to_vec(),
        }
    }
}

/// Every certificate the proxy tests use, written to a temp dir as `NAME.pem` and
/// `NAME.key`, with `ca.pem`, `other-ca.pem`, `empty.pem`, `crl.pem` (mallory revoked) and
/// `crl-empty.pem`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub other_ca: TestCa,
    pub revoked_serial: Vec<u8>,
    pub alice_der: Vec<u8>,
    serials: HashMap<String, Vec<u8>>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = super::process::tempdir();
        let ca = TestCa::new("twoway test CA");
        // Same subject as `ca`, different key: a look-alike issuer.
        let lookalike = TestCa::new("twoway test CA");
        let other_ca = TestCa::new("twoway second CA");
        let now = OffsetDateTime::now_utc();
        let server = LeafSpec::server().sign(&ca);
        let alice = LeafSpec::client("alice", ALICE).sign(&ca);
        let bob = LeafSpec::client("bob", BOB).sign(&ca);
        let revoked =
            LeafSpec::client("mallory", "spiffe://example.org/ns/prod/sa/mallory").sign(&ca);
        let expired = LeafSpec {
            not_before: now - time::Duration::days(10),
            not_after: now - time::Duration::days(1),
            ..LeafSpec::client("old", "spiffe://example.org/ns/prod/sa/old")
        }
        .sign(&ca);
        let future = LeafSpec {
            not_before: now + time::Duration::days(1),
            not_after: now + time::Duration::days(10),
            ..LeafSpec::client("new", "spiffe://example.org/ns/prod/sa/new")
        }
        .sign(&ca);
        let server_only = LeafSpec {
            eku: vec![Eku::ServerAuth],
            ..LeafSpec::client("srv", "spiffe://example.org/ns/prod/sa/srv")
        }
        .sign(&ca);
        let ca_leaf = LeafSpec {
            ca_flag: true,
            ..LeafSpec::client("subca", "spiffe://example.org/ns/prod/sa/subca")
        }
        .sign(&ca);
        let evil = LeafSpec::client("alice", ALICE).sign(&lookalike);
        let carol =
            LeafSpec::client("carol", "spiffe://example.org/ns/prod/sa/carol").sign(&other_ca);

        let mut p = Pki {
            dir,
            revoked_serial: revoked.serial.clone(),
            alice_der: alice.der.clone(),
            ca,
            other_ca,
            serials: HashMap::new(),
        };
        p.write("ca.pem", &p.ca.pem);
        p.write("other-ca.pem", &p.other_ca.pem);
        p.write("empty.pem", "# no certificate here\n");
        p.write("crl.pem", &p.ca.crl(&[&p.revoked_serial]));
        p.write("crl-empty.pem", &p.ca.crl(&[]));
        for (name, leaf) in [
            ("server", &server),
            ("alice", &alice),
            ("bob", &bob),
            ("revoked", &revoked),
            ("expired", &expired),
            ("future", &future),
            ("serveronly", &server_only),
            ("caleaf", &ca_leaf),
            ("evil", &evil),
            ("carol", &carol),
        ] {
            p.add(name, leaf);
        }
        p
    }

    /// Writes `leaf` as `NAME.pem` and `NAME.key` and remembers its serial.
    pub fn add(&mut self, name: &str, leaf: &Leaf) {
        self.write(&format!("{name}.pem"), &leaf.cert);
        self.write(&format!("{name}.key"), &leaf.key);
        self.serials.insert(name.to_string(), leaf.serial.clone());
    }

    /// The serial number of the leaf `name` (`bob`, `alice`…).
    pub fn serial(&self, name: &str) -> &[u8] {
        &self.serials[name]
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }
}

/// Runs `openssl ARGS` in `dir`.
#[track_caller]
pub fn openssl_in<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> super::Output {
    let openssl = require_tool("openssl", "openssl");
    run(Command::new(openssl).current_dir(dir).args(args))
}

/// A certificate request made by openssl (P-256) with the subject `CN=cn` (an empty
/// subject when `cn` is empty) and the `subjectAltName` extension value `sans` (none when
/// empty). Returns the CSR's PEM; the key goes to `dir/name.key`, the CSR to `dir/name.csr`.
#[track_caller]
pub fn openssl_csr(dir: &Path, name: &str, cn: &str, sans: &str) -> String {
    let subj = if cn.is_empty() {
        "/".to_string()
    } else {
        format!("/CN={}", cn.replace('/', "\\/"))
    };
    let (key, out) = (format!("{name}.key"), format!("{name}.csr"));
    let mut args = vec!["req", "-new", "-newkey", "ec", "-pkeyopt"];
    args.extend(["ec_paramgen_curve:P-256", "-nodes", "-subj", &subj]);
    args.extend(["-keyout", &key, "-out", &out]);
    let ext = format!("subjectAltName={sans}");
    if !sans.is_empty() {
        args.extend(["-addext", &ext]);
    }
    openssl_in(dir, &args).ok();
    std::fs::read_to_string(dir.join(out)).unwrap()
}

/// A self-signed P-256 certificate for the DNS name `dns` (also its CN) made by openssl,
/// as if from another CA: the key goes to `dir/key`, the certificate to `dir/cert`.
#[track_caller]
pub fn openssl_self_signed(dir: &Path, key: &str, cert: &str, dns: &str, days: u32) {
    let line = format!(
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {key} \
         -subj /CN={dns} -addext subjectAltName=DNS:{dns} -days {days} -out {cert}"
    );
    openssl_in(dir, &super::process::words(&line)).ok();
}

/// What `openssl x509 -noout ARGS` prints about the PEM certificate `pem`.
#[track_caller]
pub fn openssl_x509(pem: &str, args: &[&str]) -> String {
    let openssl = require_tool("openssl", "openssl");
    let o = run_with_timeout(
        Command::new(openssl).args(["x509", "-noout"]).args(args),
        Some(pem.as_bytes()),
        COMMAND_TIMEOUT,
    )
    .ok();
    o.stdout.trim().to_string()
}

/// The subject of a PEM certificate as openssl prints it (`subject=CN=…`, or `subject=`).
#[track_caller]
pub fn subject_of(cert_pem: &str) -> String {
    openssl_x509(cert_pem, &["-subject", "-nameopt", "RFC2253"])
}

/// The serial of the certificate file `cert` as openssl prints it, in lower case without
/// the `serial=`.
#[track_caller]
pub fn serial_of(cert: &Path) -> String {
    let pem = super::process::read(cert);
    openssl_x509(&pem, &["-serial"])
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// The SHA-256 of `data` in hex, by `openssl dgst`.
#[track_caller]
pub fn sha256_hex(data: &[u8]) -> String {
    let openssl = require_tool("openssl", "openssl");
    let o = run_with_timeout(
        Command::new(openssl).args(["dgst", "-sha256", "-r"]),
        Some(data),
        COMMAND_TIMEOUT,
    )
    .ok();
    o.stdout.split_whitespace().next().unwrap().to_owned()
}

/// The value of "X509v3 CRL Number" in `openssl crl -text` output.
#[track_caller]
pub fn crl_number(text: &str) -> String {
    let mut lines = text.lines();
    lines
        .by_ref()
        .find(|l| l.contains("X509v3 CRL Number"))
        .unwrap_or_else(|| panic!("no CRL number in:\n{text}"));
    lines
        .next()
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

/// The DER inside the first PEM block labelled `label` in `text`.
#[track_caller]
pub fn pem_decode(text: &str, label: &str) -> Vec<u8> {
    pem::parse_many(text)
        .unwrap_or_else(|e| panic!("not PEM ({e}):\n{text}"))
        .into_iter()
        .find(|p| p.tag() == label)
        .unwrap_or_else(|| panic!("no -----BEGIN {label}----- in:\n{text}"))
        .into_contents()
}

/// `der` as a PEM block labelled `label`: 64-character lines, each ending in a line feed.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
}

/// What twoway's own parser reads out of the first certificate in `pem` (validity, SANs).
#[track_caller]
pub fn cert_info(pem: &[u8]) -> twoway_pki::CertInfo {
    let ders = twoway_pki::parse_certificates(pem).expect("a certificate");
    twoway_pki::CertInfo::from_der(&ders[0]).expect("a parseable certificate")
}
