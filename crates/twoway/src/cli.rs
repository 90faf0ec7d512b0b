//! The command tree: every command's flags and help (clap). Parsing only: the commands
//! in `cmd/` take these values, `main` routes them.

use crate::cmd::proxy::ProxyArgs;
use crate::context::CaOpts;
use crate::remote::RemoteOpts;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use twoway_pki::{KeyType, Profile};

const AFTER_HELP: &str = "\
Examples:
  twoway quickstart ./demo                      a CA, a server and a client certificate, and
                                                the commands that show mTLS working
  twoway ca init --name \"Example Corp\" --permit-dns example.internal
  twoway cert issue --profile server --san DNS:api.example.internal --owner team-api --out ./api
  twoway cert list --expiring 30d
  twoway proxy server --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\
      --cert chain.pem --key key.pem --client-ca ca.pem

Exit codes: 0 ok; 1 failure (or `cert check` found certificates that need a person, or
`audit verify` found a broken chain); 64 usage or configuration error; 65 bad input data;
66 not found; 73 output exists; 74 I/O error; 77 permission denied: the CA key could not
be unlocked, or a remote CA refused the client certificate (HTTP 401: not one it knows,
revoked or expired; HTTP 403: not in its [server] admins).";

/// Mutual TLS made easy: a private CA, certificate lifecycle and inventory, and an mTLS proxy.
#[derive(Parser, Debug)]
#[command(name = "twoway", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or inspect the certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue, sign, list, inspect, import and revoke certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Sign a certificate revocation list.
    Crl(CrlArgs),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Zero to a working mTLS pair in one command.
    Quickstart(QuickstartArgs),
    /// Put mutual TLS in front of an app (server) or behind a client (client).
    Proxy(Box<ProxyArgs>),
    /// One-time enrollment tokens for `twoway agent`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enroll with a token, write the files, renew forever (or --once).
    Agent(AgentArgs),
    /// The ACME directories of `ca serve`: external account binding keys.
    #[command(subcommand)]
    Acme(AcmeCommand),
}

// ---- twoway ca …, crl, audit, quickstart

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a CA: a self-signed root, an intermediate (pathLen 0), keys (0600), ca.toml and
    /// an empty inventory. Refuses to overwrite an existing CA.
    #[command(after_help = "\
Examples:
  twoway ca init --name \"Example Corp\"
  twoway ca init --ca-dir /srv/ca --name \"Example Corp\" --key-type p384 \\
      --permit-dns example.internal --permit-ip 10.0.0.0/8 --trust-domain example.org \\
      --url https://ca.example.internal:9000 --passphrase-file /run/secrets/ca-pass

After init the root key (root.key) is not needed any more: move it offline.")]
    Init(InitArgs),
    /// Run the online CA: HTTPS API (enroll, renew, revoke, inventory), OCSP, CRL, metrics.
    Serve(ServeArgs),
    /// Show the CA: its certificates, the names it may certify, settings and inventory counts.
    #[command(after_help = "\
Examples:
  twoway ca show --ca-dir ./ca
  twoway ca show | grep 'root sha256'     # the fingerprint `twoway agent --ca-fingerprint` takes")]
    Show {
        #[command(flatten)]
        ca: CaOpts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the intermediate without downtime: prepare a new one, activate it, retire
    /// the old one once nothing depends on it.
    #[command(subcommand)]
    Rotate(RotateCommand),
}

#[derive(Subcommand, Debug)]
#[command(after_help = "\
Examples:
  twoway ca rotate intermediate --ca-dir ./ca     # g2: new key, signed by the root
  twoway ca rotate activate --ca-dir ./ca         # g2 issues; g1 keeps signing its CRL/OCSP
  systemctl restart twoway-ca                     # ca serve takes the new issuer at start
  twoway ca show --ca-dir ./ca                    # each intermediate's state and live certificates
  twoway ca rotate retire g1 --ca-dir ./ca        # once g1's last certificate has expired

The root key signs the new intermediate and, at retire, the root's CRL: run prepare and
retire where root.key is (or the token holding it). Clients pick up the new chain with
their next renewal; `roots.pem` does not change. Each step is audited (ca.rotate.*).")]
pub enum RotateCommand {
    /// Prepare a new intermediate (the next id: g2, g3, …): a new key, signed by the root,
    /// with the same name constraints and key type; it does not issue until activated.
    #[command(after_help = "\
Example:
  twoway ca rotate intermediate --ca-dir ./ca --ttl 3y")]
    Intermediate {
        #[command(flatten)]
        ca: CaOpts,
        /// Validity of the new intermediate (default: as long as the active one's; never
        /// past the root's).
        #[arg(long)]
        ttl: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prepare a new root (the next id: r2, …) and the cross certificates between it and
    /// the active root; the next `ca rotate intermediate` is signed by it, and `activate`
    /// makes both active. Needs root.key here.
    #[command(after_help = "\
Example:
  twoway ca rotate root --ca-dir ./ca            # r2, r2-by-r1.pem and r1-by-r2.pem
  twoway ca rotate intermediate --ca-dir ./ca    # g3, signed by r2
  twoway ca rotate activate --ca-dir ./ca        # r2 and g3 active; roots.pem holds r2 and r1
  twoway ca rotate retire g2 --ca-dir ./ca       # once g2's certificates are gone
  twoway ca rotate retire r1 --ca-dir ./ca       # then r1 leaves roots.pem

While both roots are trusted, chains of the new intermediate carry r2 certified by r1, so
verifiers that trust only r1 accept them; r1-by-r2.pem does the same the other way.")]
    Root {
        #[command(flatten)]
        ca: CaOpts,
        /// Validity of the new root (default: as long as the active one's).
        #[arg(long)]
        ttl: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the prepared intermediate the issuer of new certificates; the active one
    /// becomes retiring (it signs its CRL and OCSP answers until retired).
    #[command(after_help = "\
Example:
  twoway ca rotate activate --ca-dir ./ca && systemctl restart twoway-ca")]
    Activate {
        #[command(flatten)]
        ca: CaOpts,
    },
    /// Retire a retiring intermediate (a final CRL valid until its expiry, revoked by its
    /// root, its key destroyed; refused while it has live certificates, unless --force) or
    /// a retiring root (once no intermediate is left under it).
    #[command(after_help = "\
Example:
  twoway ca rotate retire g1 --ca-dir ./ca
  twoway cert list --issuer g1 --status active    # what still depends on g1")]
    Retire {
        /// The intermediate's or root's id (`twoway ca show` lists them): g1, r1, …
        id: String,
        #[command(flatten)]
        ca: CaOpts,
        /// Retire even though certificates it issued are still valid: they keep the final
        /// CRL, and OCSP stops answering for them.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub ca: CaOpts,
    /// Organisation name for the CA certificates' subjects.
    #[arg(long)]
    pub name: String,
    /// Key type of the CA keys: p256, p384, ed25519, rsa2048, rsa3072, rsa4096.
    #[arg(long, default_value = "p256")]
    pub key_type: KeyType,
    /// Root validity.
    #[arg(long, default_value = "10y")]
    pub root_ttl: String,
    /// Intermediate validity.
    #[arg(long, default_value = "5y")]
    pub intermediate_ttl: String,
    /// Permitted DNS subtree (X.509 name constraint and policy); repeatable.
    #[arg(long = "permit-dns", value_name = "DOMAIN")]
    pub permit_dns: Vec<String>,
    /// Permitted IP range (X.509 name constraint and policy); repeatable.
    #[arg(long = "permit-ip", value_name = "CIDR")]
    pub permit_ip: Vec<String>,
    /// SPIFFE trust domain: URI SANs limited to spiffe://DOMAIN/*.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Public URL of the CA (CRL distribution point and OCSP in issued certificates).
    #[arg(long)]
    pub url: Option<String>,
    /// Generate the intermediate key inside a PKCS#11 token (an HSM) instead of
    /// intermediate.key: an RFC 7512 URI such as 'pkcs11:token=ca;object=intermediate'.
    /// Needs --pkcs11-module and --pin-file or --pin-env; EC (p256, p384) or RSA
    /// (rsa2048, rsa3072, rsa4096) keys.
    #[arg(long, value_name = "URI")]
    pub key_uri: Option<String>,
    /// Generate the root key in the same token too, instead of root.key: e.g.
    /// 'pkcs11:token=ca;object=root'. `twoway crl --root` then signs there.
    #[arg(long, value_name = "URI", requires = "key_uri")]
    pub root_key_uri: Option<String>,
    /// The PKCS#11 library of --key-uri, e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, value_name = "PATH", requires = "key_uri")]
    pub pkcs11_module: Option<String>,
    /// A file holding the token's user PIN (kept as a path in ca.toml, never the PIN).
    #[arg(long, value_name = "FILE", requires = "key_uri")]
    pub pin_file: Option<String>,
    /// An environment variable holding the token's user PIN.
    #[arg(
        long,
        value_name = "VAR",
        requires = "key_uri",
        conflicts_with = "pin_file"
    )]
    pub pin_env: Option<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  twoway crl --out crl.pem                    # PEM; --out crl.der for DER
  twoway crl --next-update 7d > crl.pem
  openssl verify -crl_check -CRLfile crl.pem -CAfile ca/root.pem -untrusted ca/intermediate.pem cert.pem
  twoway crl --all --out bundle.pem            # every CRL of the chain, for nginx's ssl_crl
  openssl verify -crl_check_all -CRLfile bundle.pem -CAfile ca/root.pem -untrusted ca/intermediate.pem cert.pem
  twoway crl --root --next-update 365d         # where the root key is kept: a new root.crl
  twoway crl --delta --base crl.pem --out delta.pem   # what was revoked since crl.pem
  openssl verify -crl_check -use_deltas -CRLfile crl.pem -CRLfile delta.pem -CAfile ca/root.pem -untrusted ca/intermediate.pem cert.pem

Each CRL takes the next CRL number (recorded in the audit log) and lists every revoked,
unexpired certificate of its issuer: the intermediate's leaves, or with --root the root's
intermediates. Verifiers that check the whole chain (nginx ssl_crl, openssl -crl_check_all)
need both: --all writes the intermediate's CRL and the root's (signed afresh when root.key is
in the CA directory, else the root.crl signed at init or by the last `twoway crl --root`).
--delta signs a delta CRL (RFC 5280 5.2.4) against the complete CRL given with --base: the
certificates revoked since it was signed; with [crl] delta = true complete CRLs name
<url>/crl/delta, where `ca serve` publishes one.")]
pub struct CrlArgs {
    #[command(flatten)]
    pub ca: CaOpts,
    /// Where to write the CRL; .der for DER, anything else PEM. Default: PEM on stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How long the CRL is valid (default: [crl] next_update in ca.toml; 365d with --root).
    #[arg(long)]
    pub next_update: Option<String>,
    /// Sign the root's CRL with the root key instead, and keep it in the CA directory as root.crl.
    #[arg(long, conflicts_with = "all")]
    pub root: bool,
    /// Write every CRL of the chain (the intermediate's, then the root's) as one PEM file.
    #[arg(long)]
    pub all: bool,
    /// Sign a delta CRL against the complete CRL given with --base (default validity:
    /// [crl] delta_next_update).
    #[arg(long, requires = "base", conflicts_with_all = ["root", "all"])]
    pub delta: bool,
    /// The complete CRL (PEM or DER) this CA signed that --delta is relative to.
    #[arg(long, value_name = "FILE", requires = "delta")]
    pub base: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
#[command(after_help = "\
Examples:
  twoway audit list --from 120 --limit 20
  twoway audit verify || echo 'the audit log was altered'")]
pub enum AuditCommand {
    /// List audit entries, oldest first.
    #[command(after_help = "\
Examples:
  twoway audit list
  twoway audit list --from 120 --limit 20 --json")]
    List {
        #[command(flatten)]
        ca: CaOpts,
        /// First sequence number to show.
        #[arg(long, default_value_t = 1)]
        from: i64,
        /// Most entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the hash chain: detects an altered or removed entry (exit 1 if broken).
    #[command(after_help = "\
Example:
  twoway audit verify || notify-security
  twoway audit verify --checkpoint /backup/audit-checkpoint.json

The chain proves every entry up to the newest one, but not that the newest entries are all
there: removing entries from the end leaves a shorter chain that verifies. A checkpoint
(`twoway audit checkpoint`, kept somewhere else) closes that gap: with --checkpoint, verify
also proves that the log still holds the checkpointed entry, unchanged.")]
    Verify {
        #[command(flatten)]
        ca: CaOpts,
        /// A checkpoint from `twoway audit checkpoint`: also prove nothing up to it is gone.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign the log's head (sequence number and hash) with the intermediate key: a checkpoint
    /// to keep elsewhere, which `audit verify --checkpoint` checks the log against.
    #[command(after_help = "\
Examples:
  twoway audit checkpoint --out /backup/audit-checkpoint.json
  twoway audit checkpoint | curl -sS --data-binary @- https://evidence.example.internal/twoway
  twoway audit verify --checkpoint /backup/audit-checkpoint.json

The checkpoint is JSON: the intermediate's fingerprint, the head's sequence number and hash,
the time, and a signature by the intermediate key. Taking one is itself audited
(audit.checkpoint, the entry after the checkpointed one).")]
    Checkpoint {
        #[command(flatten)]
        ca: CaOpts,
        /// Where to write it (written whole or not at all). Default: stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
#[command(after_help = "\
Example:
  twoway quickstart ./demo
Creates ./demo/ca, ./demo/server (localhost, 127.0.0.1, ::1) and ./demo/client, then prints
the openssl and curl commands that show mutual TLS working, and failing without the client
certificate.")]
pub struct QuickstartArgs {
    /// Directory to create everything in.
    pub dir: PathBuf,
}

// ---- twoway ca serve

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  twoway ca serve --ca-dir /srv/ca --listen 0.0.0.0:9000 --san DNS:ca.example.internal
  twoway ca serve --listen 127.0.0.1:9000 --san IP:127.0.0.1 --admin URI:spiffe://example.org/admin
  twoway ca serve --listen 127.0.0.1:9000 --http-listen 127.0.0.1:9080   # OCSP/CRL over HTTP too
  twoway ca serve --database postgres://twoway@127.0.0.1:5432/twoway    # one of several replicas

The server's own certificate carries --san (default: [server] sans), names the CA must be
allowed to certify. Admins are [server] admins in ca.toml plus --admin; SIGHUP re-reads
[server] admins (other settings need a restart). On SIGTERM or Ctrl-C the server retires
its own TLS and OCSP-signing certificates, whose keys exist only in its memory.

Routes: POST /v1/enroll, /v1/renew, /v1/sign, /v1/revoke, /v1/tokens; GET /v1/certificates,
/roots.pem, /crl, /ocsp, /healthz, /metrics (docs/api.md).")]
pub struct ServeArgs {
    #[command(flatten)]
    pub ca: CaOpts,
    /// HTTPS address (default: [server] listen in ca.toml, else 127.0.0.1:9000).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Also serve /ocsp, /crl, /roots.pem, /healthz and /metrics over plain HTTP here.
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Inventory database: sqlite://PATH or postgres://user[:password]@host:port/db
    /// (default: [server] database, else the CA directory's inventory.db).
    #[arg(long, env = "TWOWAY_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// SAN of the server's own certificate; repeatable (default: [server] sans).
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    pub sans: Vec<String>,
    /// An administrator besides [server] admins: a SAN of a client certificate issued by
    /// this CA, or sha256:<fingerprint>; repeatable.
    #[arg(long = "admin", value_name = "SAN|sha256:HEX")]
    pub admins: Vec<String>,
    /// Validity of the server's own certificate (renewed at 2/3).
    #[arg(long, default_value = "24h")]
    pub server_cert_ttl: String,
}

// ---- twoway cert …

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a certificate with a key generated here; writes cert.pem, chain.pem, key.pem
    /// (0600) and ca.pem into --out.
    #[command(after_help = "\
Examples:
  twoway cert issue --profile server --san DNS:api.example.internal --san IP:10.0.0.5 \\
      --ttl 90d --owner team-payments --label env=prod --location host-17 --out ./api
  twoway cert issue --profile client --san URI:spiffe://example.org/ns/prod/sa/billing --out ./billing
  twoway cert issue --profile user --san EMAIL:alice@example.org --p12 alice.p12 \\
      --p12-passphrase-file ./alice.pass --friendly-name \"Alice (example.org)\"")]
    Issue(IssueArgs),
    /// Write a certificate of the inventory with its key (a key.pem this host holds) and
    /// the chain into a passphrase-protected PKCS#12 file, for browsers, phones and
    /// keystores.
    #[command(after_help = "\
Examples:
  twoway cert export 4f3a9c21e0b7 --key ./alice/key.pem --p12 alice.p12 \\
      --p12-passphrase-file ./alice.pass
  TWOWAY_P12_PASSPHRASE=s3cret twoway cert export 4f3a9c21e0b7 --key ./alice/key.pem \\
      --p12 alice-old-windows.p12 --legacy
  twoway cert export 4f3a9c21e0b7 --key ./alice/key.pem --p12 alice.p12   # prompts

The passphrase comes from --p12-passphrase-file (its first line), else the environment
variable TWOWAY_P12_PASSPHRASE, else a prompt on the terminal (not echoed, asked twice).
Default encryption: PBES2 (PBKDF2-HMAC-SHA256, 2048 iterations, AES-256-CBC) and an
HMAC-SHA256 MAC, as OpenSSL 3 writes; --legacy: pbeWithSHAAnd3-KeyTripleDES-CBC and an
HMAC-SHA1 MAC for old Windows, macOS and Java (openssl 3 reads it with -legacy).")]
    Export(ExportArgs),
    /// Make a private key and a CSR for the CA to sign (the key never leaves this machine).
    #[command(after_help = "\
Example:
  twoway cert csr --san DNS:api.example.internal --out ./api     # writes key.pem and csr.pem
  twoway cert sign ./api/csr.pem --profile server --out ./api     # on the CA")]
    Csr(CsrArgs),
    /// Sign a CSR: its signature is verified, its names checked against policy.
    #[command(after_help = "\
Examples:
  twoway cert sign request.csr --profile client --owner team-a --out ./client
  twoway cert sign request.csr --profile server > chain.pem")]
    Sign(SignArgs),
    /// List the inventory (a table for people, --json for machines).
    #[command(after_help = "\
Examples:
  twoway cert list --expiring 30d
  twoway cert list --owner team-payments --label env=prod --json
  twoway cert list --san '*.example.internal' --status revoked")]
    List(ListArgs),
    /// Show one certificate by its ID (the first column of `cert list`), serial or SHA-256
    /// fingerprint (or a unique prefix of 8+ hex digits of either).
    #[command(after_help = "\
Examples:
  twoway cert show 4f3a9c21e0b7            # the ID column of `twoway cert list`
  twoway cert show 4f3a9c21e0b7 --pem > api.pem
  twoway cert show 01a218aafaf2d6a1de834a6f418945a3 --json

An ID is the start of the SHA-256 fingerprint, which is random; serials start with the
issue time, so a short serial prefix can match several certificates issued together.")]
    Show {
        /// ID, serial or fingerprint, hex.
        serial: String,
        #[command(flatten)]
        ca: CaOpts,
        /// Print the PEM too.
        #[arg(long)]
        pem: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record certificates this CA did not issue, so the inventory answers for them too.
    #[command(after_help = "\
Example:
  twoway cert import /etc/nginx/certs/*.pem --owner team-web --location web-01")]
    Import(ImportArgs),
    /// Show what a certificate file holds, or what a server presents.
    #[command(after_help = "\
Examples:
  twoway cert inspect ./api/chain.pem
  twoway cert inspect --remote api.example.internal:8443
  twoway cert inspect --remote 127.0.0.1:8443 --server-name localhost --ca ./ca.pem")]
    Inspect(InspectArgs),
    /// Revoke a certificate; publish with `twoway crl`.
    #[command(after_help = "\
Example:
  twoway cert revoke 4f3a9c21e0b7 --reason key-compromise && twoway crl --out crl.pem

Reasons: unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
cessation-of-operation, certificate-hold, privilege-withdrawn.")]
    Revoke {
        /// ID (from `cert list`), serial or fingerprint, hex.
        serial: String,
        /// Why.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        #[command(flatten)]
        ca: CaOpts,
    },
    /// Archive, then remove, certificates that expired long ago, so the inventory stays
    /// the size of what is in use.
    #[command(after_help = "\
Examples:
  twoway cert prune --expired-before 90d
  twoway cert prune --expired-before 1y --archive /backup/twoway-pruned.jsonl --json

Removes certificates (revoked or not) whose notAfter is more than the given time ago, at
most --limit a run (run again while it says more are left). Their whole records, PEM
included, are first written as JSON lines to the archive (0600; default
CA_DIR/archive/pruned-<time>.jsonl), and only then deleted, in one transaction with a
`cert.prune` audit entry naming the archive and its SHA-256. Their earlier audit entries
stay. An expired certificate is on no CRL, so pruning changes no CRL.")]
    Prune {
        /// How long ago a certificate must have expired (`90d`, `1y`, `12h`).
        #[arg(long)]
        expired_before: String,
        /// Where to write the archive (a new file).
        #[arg(long)]
        archive: Option<std::path::PathBuf>,
        /// Most certificates removed in one run.
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
        #[command(flatten)]
        ca: CaOpts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List what expires within a window and needs a person; exit 1 when anything does (for
    /// cron and monitoring).
    #[command(after_help = "\
Example:
  twoway cert check --within 14d || notify-team

Not reported: certificates that renew themselves while they still can, i.e. enrolled ones
an agent renews (label renewal=agent), the online CA's own TLS and OCSP certificates, and
owners or profiles listed in [renewal] of ca.toml (or labelled renewal=auto). Such a
certificate is reported once three quarters of its life have passed without a renewal.
Revoked and superseded certificates are never reported.

Also reported (exit 1): the root's CRL (root.crl) when its nextUpdate falls within the
window, since a person signs it where the root key is (`twoway crl --root`).")]
    Check {
        /// The window.
        #[arg(long, default_value = "14d")]
        within: String,
        #[command(flatten)]
        ca: CaOpts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct NameArgs {
    /// Subject alternative name: DNS:name, IP:addr, URI:uri (e.g. a SPIFFE ID), EMAIL:addr; repeatable.
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    pub sans: Vec<String>,
    /// Optional subject common name.
    #[arg(long)]
    pub cn: Option<String>,
}

#[derive(Args, Debug)]
pub struct MetaArgs {
    /// Validity, e.g. 24h, 90d (default: the profile's default_ttl in ca.toml).
    #[arg(long)]
    pub ttl: Option<String>,
    /// Owner (team or person), for the inventory.
    #[arg(long)]
    pub owner: Option<String>,
    /// Label key=value, for the inventory; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Where the certificate is deployed, for the inventory.
    #[arg(long)]
    pub location: Option<String>,
}

#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Profile: server, client, peer, device or user.
    #[arg(long)]
    pub profile: Profile,
    #[command(flatten)]
    pub names: NameArgs,
    #[command(flatten)]
    pub meta: MetaArgs,
    /// Key type of the new key.
    #[arg(long, default_value = "p256")]
    pub key_type: KeyType,
    /// Output directory (cert.pem, chain.pem, key.pem, ca.pem); with --p12 alone, no PEM
    /// file is written.
    #[arg(long, required_unless_present = "p12")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub p12: P12Args,
    /// Replace existing files in --out (and an existing --p12 file).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A PKCS#12 file to write, and how.
#[derive(Args, Debug, Default)]
pub struct P12Args {
    /// Also write key, certificate and chain into this PKCS#12 file (0600, written
    /// atomically).
    #[arg(long, value_name = "FILE")]
    pub p12: Option<PathBuf>,
    /// File holding the PKCS#12 passphrase (first line); else TWOWAY_P12_PASSPHRASE, else
    /// a prompt.
    #[arg(long, value_name = "FILE")]
    pub p12_passphrase_file: Option<PathBuf>,
    /// Encrypt with pbeWithSHAAnd3-KeyTripleDES-CBC and an HMAC-SHA1 MAC (old Windows,
    /// macOS and Java) instead of AES-256 and HMAC-SHA256.
    #[arg(long)]
    pub legacy: bool,
    /// The friendly name (alias) importers show; default: the certificate's first SAN.
    #[arg(long, value_name = "NAME")]
    pub friendly_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// ID (from `cert list`), serial or fingerprint, hex.
    pub serial: String,
    /// The certificate's private key (PEM, unencrypted), e.g. the key.pem `cert issue` wrote.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    #[command(flatten)]
    pub p12: P12Args,
    /// Replace an existing --p12 file.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub ca: CaOpts,
}

#[derive(Args, Debug)]
pub struct CsrArgs {
    #[command(flatten)]
    pub names: NameArgs,
    /// Key type of the new key.
    #[arg(long, default_value = "p256")]
    pub key_type: KeyType,
    /// Output directory for key.pem (0600) and csr.pem.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace existing files in --out.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The CSR, PEM or DER.
    pub csr: PathBuf,
    /// Profile: server, client, peer, device or user.
    #[arg(long)]
    pub profile: Profile,
    #[command(flatten)]
    pub meta: MetaArgs,
    /// Output directory for cert.pem, chain.pem and ca.pem; default: the chain on stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace existing files in --out.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub ca: CaOpts,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only certificates that expire within this window, e.g. 30d.
    #[arg(long)]
    pub expiring: Option<String>,
    /// Only expired certificates.
    #[arg(long)]
    pub expired: bool,
    /// Only this owner.
    #[arg(long)]
    pub owner: Option<String>,
    /// Only certificates with this label; repeatable (all must match).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Only this status: active, revoked, expired.
    #[arg(long)]
    pub status: Option<String>,
    /// Only certificates with a SAN matching this glob, e.g. '*.example.internal'.
    #[arg(long)]
    pub san: Option<String>,
    /// Only this profile: server, client, peer, device, user, ocsp, scep-ra (the SCEP RA), ca, unknown.
    #[arg(long, value_parser = ["server", "client", "peer", "device", "user", "ocsp", "scep-ra", "ca", "unknown"])]
    pub profile: Option<String>,
    /// Only certificates of this issuer: an intermediate's id (g1, g2: `ca show` lists
    /// them) or an issuer's subject, exactly.
    #[arg(long, value_name = "ID|SUBJECT")]
    pub issuer: Option<String>,
    /// Rows per page.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Page number, from 1.
    #[arg(long, default_value_t = 1)]
    pub page: usize,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// PEM or DER files; every certificate in them is recorded. Files holding no
    /// certificate (keys, CSRs) or that cannot be read for lack of permission are skipped
    /// and named; a malformed certificate stops the import before anything is recorded.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Owner, for the inventory.
    #[arg(long)]
    pub owner: Option<String>,
    /// Label key=value; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Where it is deployed.
    #[arg(long)]
    pub location: Option<String>,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A PEM or DER file with one or more certificates.
    #[arg(required_unless_present = "remote", conflicts_with = "remote")]
    pub file: Option<PathBuf>,
    /// Connect to host:port and show the chain the server presents.
    #[arg(long, value_name = "HOST:PORT")]
    pub remote: Option<String>,
    /// SNI name to send (default: the host of --remote).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Also check the chain against these trust anchors (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

// ---- twoway token

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a one-time enrollment token bound to names, a profile and an owner. The token is
    /// printed once (stdout); only its SHA-256 is stored.
    #[command(after_help = "\
Examples:
  twoway token create --san DNS:api.example.internal --profile server --ttl 15m --owner team-api
  twoway --ca https://ca.example.internal:9000 --cert admin/chain.pem --key admin/key.pem \\
      --ca-cert admin/ca.pem token create --san URI:spiffe://example.org/billing --profile client
Then on the workload:
  twoway agent --ca https://ca.example.internal:9000 --ca-fingerprint <root sha256> \\
      --token <token> --san DNS:api.example.internal --out /etc/twoway/api")]
    Create(CreateArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A name the enrolling CSR may ask for; repeatable.
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    pub sans: Vec<String>,
    /// Profile of the certificate: server, client, peer, device or user.
    #[arg(long, default_value = "server")]
    pub profile: Profile,
    /// How long the token can be used.
    #[arg(long, default_value = "15m")]
    pub ttl: String,
    /// Validity of the certificate (default: [server] workload_ttl, 24h).
    #[arg(long)]
    pub cert_ttl: Option<String>,
    /// Owner recorded on the certificate.
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

// ---- twoway agent

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  twoway agent --ca https://ca.example.internal:9000 --ca-fingerprint 3f2a…(root SHA-256) \\
      --token twt_… --san DNS:api.example.internal --out /etc/twoway/api \\
      --reload-cmd 'systemctl reload nginx'
  twoway agent --ca https://ca.example.internal:9000 --ca-fingerprint 3f2a… \\
      --san DNS:api.example.internal --out /etc/twoway/api --once     # from cron

Writes cert.pem, chain.pem, key.pem (0600) and ca.pem atomically; renews at about 2/3 of
the lifetime with a fresh key; retries with capped exponential backoff while the CA is down.")]
pub struct AgentArgs {
    /// The CA's URL, https://host:port.
    #[arg(long, env = "TWOWAY_CA_URL")]
    pub ca: String,
    /// SHA-256 fingerprint of the CA's root certificate (hex; colons allowed).
    #[arg(long, env = "TWOWAY_CA_FINGERPRINT")]
    pub ca_fingerprint: String,
    /// One-time enrollment token (needed until a certificate exists in --out).
    #[arg(long, env = "TWOWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Name to ask for; repeatable.
    #[arg(long = "san", value_name = "TYPE:VALUE")]
    pub sans: Vec<String>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Key type of the keys made here.
    #[arg(long, default_value = "p256")]
    pub key_type: KeyType,
    /// Shell command to run after new files are in place.
    #[arg(long)]
    pub reload_cmd: Option<String>,
    /// Send SIGHUP to the pid in this file after new files are in place.
    #[arg(long)]
    pub signal_pid_file: Option<PathBuf>,
    /// Obtain or renew if due, then exit.
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9101).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
pub enum AcmeCommand {
    /// External account binding (EAB) keys.
    #[command(subcommand)]
    Eab(EabCommand),
    /// Ask ACME clients to renew certificates now: their renewal information (RFC 9773)
    /// suggests a window that has begun, so clients that check it (certbot >= 4.1, …)
    /// renew at their next run. Every replica answers the same; audited.
    #[command(after_help = "\
Examples:
  twoway acme renew-early --serial 01a2b3c4d5e6f708
  twoway acme renew-early --issued-before 2026-11-01T00:00:00Z --directory web
  twoway acme renew-early --all --json")]
    RenewEarly(RenewEarlyArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["serial", "issued_before", "all"])))]
pub struct RenewEarlyArgs {
    /// These certificates (serial or fingerprint; repeatable).
    #[arg(long = "serial", value_name = "SERIAL")]
    pub serial: Vec<String>,
    /// Active ACME certificates issued before this instant (RFC 3339, e.g.
    /// 2026-11-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub issued_before: Option<String>,
    /// Every active ACME certificate.
    #[arg(long)]
    pub all: bool,
    /// Only certificates ordered through this `[[acme.directory]]`.
    #[arg(long)]
    pub directory: Option<String>,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum EabCommand {
    /// Make an EAB key for one ACME directory. The key id and HMAC key are printed once;
    /// only the key's SHA-256 is stored. The first account bound with it uses it up and
    /// takes its owner.
    #[command(after_help = "\
Examples:
  twoway acme eab create --directory web --owner team-web
  twoway acme eab create --directory lab --owner team-lab --preauthorize '*.lab.example.internal'
Then:
  certbot register --server https://ca.example.internal:9000/acme/web/directory \\
      --eab-kid <kid> --eab-hmac-key <hmac key> ...")]
    Create(EabCreateArgs),
    /// List EAB keys: id, directory, owner, when made, the account bound with it (or
    /// unused), revoked. Never the key itself (only its hash is stored).
    #[command(after_help = "\
Examples:
  twoway acme eab list
  twoway acme eab list --directory web --json")]
    List(EabListArgs),
    /// Revoke an EAB key: an unused key can no longer bind an account; the account bound
    /// with a used key is revoked too, and its requests are refused from then on.
    #[command(after_help = "\
Example:
  twoway acme eab revoke 3f2a9c0d4e5b6a7f8091a2b3c4d5e6f7")]
    Revoke(EabRevokeArgs),
}

#[derive(Args, Debug)]
pub struct EabListArgs {
    /// Only keys of this `[[acme.directory]]`.
    #[arg(long)]
    pub directory: Option<String>,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EabRevokeArgs {
    /// The key id (`kid`), as `eab create` printed it.
    pub kid: String,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EabCreateArgs {
    /// The `[[acme.directory]]` name the key is for.
    #[arg(long)]
    pub directory: String,
    /// Owner recorded on the certificates of the account bound with it (default: the
    /// directory's owner).
    #[arg(long)]
    pub owner: Option<String>,
    /// DNS name glob (`*` never crosses a dot; repeatable): accounts bound with this key
    /// get authorizations that are valid without any challenge for matching names (for
    /// networks no validation can reach). The directory's `allow` and `[policy]` still
    /// apply; each such authorization is audited.
    #[arg(long, value_name = "GLOB")]
    pub preauthorize: Vec<String>,
    #[command(flatten)]
    pub ca: CaOpts,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
