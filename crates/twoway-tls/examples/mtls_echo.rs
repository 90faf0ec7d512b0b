//! A complete mutual-TLS echo over loopback with twoway-tls: a throwaway CA, a server that
//! only accepts `spiffe://example.org/ns/prod/*`, and a client that expects the server to be
//! `dns:localhost`. Run with `cargo run -p twoway-tls --example mtls_echo`.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twoway_tls::{
    Credentials, PeerAuth, PeerIdentity, Policy, Reloadable, TlsOptions, TrustBundle,
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn leaf(
    issuer: &Issuer<'_, &KeyPair>,
    san: SanType,
    eku: ExtendedKeyUsagePurpose,
) -> Res<(String, String)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "example");
    p.subject_alt_names = vec![san];
    p.extended_key_usages = vec![eku];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    Ok((p.signed_by(&key, issuer)?.pem(), key.serialize_pem()))
}

#[tokio::main]
async fn main() -> Res<()> {
    // Binaries install the provider once at start.
    let _ = twoway_tls::provider().install_default();
    let provider = twoway_tls::provider();

    // A throwaway CA and two leaves.
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "example CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::from_params(&ca, &ca_key);
    let (srv_cert, srv_key) = leaf(
        &issuer,
        SanType::DnsName("localhost".try_into()?),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (cli_cert, cli_key) = leaf(
        &issuer,
        SanType::URI("spiffe://example.org/ns/prod/sa/demo".try_into()?),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    // Server: client certificates required, only prod workloads.
    let server_creds =
        Credentials::from_pem("server", srv_cert.as_bytes(), srv_key.as_bytes(), &provider)?;
    let clients = PeerAuth {
        policy: Policy::parse(&["spiffe://example.org/ns/prod/*"])?,
        ..PeerAuth::new(TrustBundle::from_pem("ca", ca_pem.as_bytes())?)
    };
    let server_cfg = Reloadable::new(twoway_tls::server_config(
        &server_creds,
        &clients,
        &TlsOptions::default(),
    )?);

    // Client: presents its certificate, expects the server to be localhost.
    let client_creds =
        Credentials::from_pem("client", cli_cert.as_bytes(), cli_key.as_bytes(), &provider)?;
    let servers = PeerAuth {
        policy: Policy::parse(&["dns:localhost"])?,
        ..PeerAuth::new(TrustBundle::from_pem("ca", ca_pem.as_bytes())?)
    };
    let client_cfg = twoway_tls::client_config(&client_creds, &servers, &TlsOptions::default())?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        // Pick the current config per connection: a reload swaps it for later ones.
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&*server_cfg.load()));
        let mut tls = acceptor.accept(tcp).await?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(PeerIdentity::from_leaf)
            .transpose()?
            .map(|id| id.primary().to_owned())
            .unwrap_or_default();
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).await?;
        tls.write_all(
            format!(
                "hello {peer}, you said {:?}",
                String::from_utf8_lossy(&buf[..n])
            )
            .as_bytes(),
        )
        .await?;
        tls.shutdown().await?;
        Res::Ok(())
    });

    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(client_cfg)
        .connect("localhost".try_into()?, tcp)
        .await?;
    tls.write_all(b"ping").await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    println!("{answer}");
    server.await??;
    Ok(())
}
