//! The HTTPS client of the CA's API, shared by the agent and the remote CLI.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use twoway_api::ErrorBody;

/// What can go wrong talking to the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The CA could not be reached, or the connection broke (worth retrying).
    #[error("cannot reach the CA at {0}: {1}")]
    Transport(String, String),
    /// The CA answered with an error.
    #[error("the CA refused ({status}, {code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `error.code`.
        code: String,
        /// `error.message`.
        message: String,
    },
    /// The answer could not be read.
    #[error("unexpected answer from the CA: {0}")]
    Decode(String),
    /// A URL, certificate or key we were given is wrong.
    #[error("{0}")]
    Config(String),
    /// The root the CA serves does not have the expected fingerprint.
    #[error("the CA's root certificate has SHA-256 fingerprint {got}, not the expected {want}: refusing to trust it")]
    FingerprintMismatch {
        /// What the CA served.
        got: String,
        /// What was expected.
        want: String,
    },
}

impl ClientError {
    /// True for errors worth retrying later (the CA is down, or said "try later").
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(..) => true,
            ClientError::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A parsed `https://host[:port]` URL.
#[derive(Clone, Debug)]
struct Target {
    host: String,
    port: u16,
    url: String,
}

fn parse_url(url: &str) -> Result<Target, ClientError> {
    let rest = url
        .trim()
        .trim_end_matches('/')
        .strip_prefix("https://")
        .ok_or_else(|| {
            ClientError::Config(format!("the CA URL {url:?} must start with https://"))
        })?;
    if rest.contains('/') {
        return Err(ClientError::Config(format!(
            "the CA URL {url:?} must be https://host[:port] without a path"
        )));
    }
    let (host, port) = if let Some(h) = rest.strip_prefix('[') {
        let (h, after) = h
            .split_once(']')
            .ok_or_else(|| ClientError::Config(format!("bad IPv6 address in {url:?}")))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok(),
            None if after.is_empty() => Some(443),
            None => None,
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()),
            None => (rest.to_string(), Some(443)),
        }
    };
    let port = port.ok_or_else(|| ClientError::Config(format!("bad port in {url:?}")))?;
    if host.is_empty() {
        return Err(ClientError::Config(format!("no host in {url:?}")));
    }
    Ok(Target {
        host,
        port,
        url: url.trim().trim_end_matches('/').to_string(),
    })
}

/// A client of one CA, trusting one root, optionally presenting a client certificate.
#[derive(Clone)]
pub struct CaClient {
    target: Target,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClient")
            .field("url", &self.target.url)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client certificate chain (PEM, leaf first) and its key (PEM).
#[derive(Clone)]
pub struct ClientIdentity {
    /// The chain, PEM.
    pub chain_pem: String,
    /// The key, PEM.
    pub key_pem: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CaClient {
    /// A client of the CA at `url` (`https://host:port`) that trusts `root_pem`.
    pub fn new(
        url: &str,
        root_pem: &str,
        identity: Option<&ClientIdentity>,
    ) -> Result<Self, ClientError> {
        let target = parse_url(url)?;
        let mut roots = rustls::RootCertStore::empty();
        let certs = twoway_pki::parse_certificates(root_pem.as_bytes())
            .map_err(|e| ClientError::Config(format!("the CA certificate: {e}")))?;
        for c in certs {
            roots
                .add(CertificateDer::from(c))
                .map_err(|e| ClientError::Config(format!("the CA certificate: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut cfg = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let chain: Vec<CertificateDer<'static>> =
                    twoway_pki::parse_certificates(id.chain_pem.as_bytes())
                        .map_err(|e| ClientError::Config(format!("the client certificate: {e}")))?
                        .into_iter()
                        .map(CertificateDer::from)
                        .collect();
                let key = twoway_pki::PrivateKey::from_pem(&id.key_pem, None)
                    .map_err(|e| ClientError::Config(format!("the client key: {e}")))?;
                let der =
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.key_pair().serialize_der()));
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|e| ClientError::Config(format!("the client certificate: {e}")))?
            }
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(CaClient {
            target,
            tls: Arc::new(cfg),
            timeout: Duration::from_secs(30),
        })
    }

    /// Fetches `/roots.pem` from `url` and returns the root in it whose SHA-256 fingerprint
    /// (hex, `:` allowed) is `fingerprint`: the first, or during a root rotation the other
    /// one, so agents pinned to either root keep working.
    pub async fn bootstrap_root(url: &str, fingerprint: &str) -> Result<String, ClientError> {
        let target = parse_url(url)?;
        let p = provider();
        let mut cfg = rustls::ClientConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(twoway_tls::UnauthenticatedServer::new(p)))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let c = CaClient {
            target,
            tls: Arc::new(cfg),
            timeout: Duration::from_secs(30),
        };
        let (status, body) = c.request(Method::GET, "/roots.pem", None).await?;
        if status != StatusCode::OK {
            return Err(ClientError::Decode(format!("/roots.pem answered {status}")));
        }
        let pem = String::from_utf8(body.to_vec())
            .map_err(|_| ClientError::Decode("/roots.pem is not text".into()))?;
        let roots = twoway_pki::parse_certificates(pem.as_bytes())
            .map_err(|e| ClientError::Decode(format!("/roots.pem: {e}")))?;
        let first = roots
            .first()
            .ok_or_else(|| ClientError::Decode("/roots.pem holds no certificate".into()))?;
        let want = fingerprint.trim().to_ascii_lowercase().replace(':', "");
        let want = want
            .strip_prefix("sha256")
            .unwrap_or(&want)
            .trim_start_matches('=')
            .to_string();
        match roots.iter().find(|r| twoway_pki::sha256_hex(r) == want) {
            Some(r) => Ok(twoway_pki::der_to_pem("CERTIFICATE", r)),
            None => Err(ClientError::FingerprintMismatch {
                got: twoway_pki::sha256_hex(first),
                want,
            }),
        }
    }

    /// Sends one request and returns the status and body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        tokio::time::timeout(self.timeout, self.request_inner(method, path, body))
            .await
            .map_err(|_| ClientError::Transport(self.target.url.clone(), "timed out".into()))?
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let t = |e: String| ClientError::Transport(self.target.url.clone(), e);
        let tcp = tokio::net::TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| t(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.target.host.clone())
            .map_err(|e| ClientError::Config(format!("bad host name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| t(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| t(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = format!("{}:{}", self.target.host, self.target.port);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, host);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| t(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| t(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Sends JSON and decodes JSON, turning an error body into [`ClientError::Api`].
    pub async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let (status, bytes) = self.request(method, path, body).await?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => ClientError::Api {
                    status: status.as_u16(),
                    code: e.error.code,
                    message: e.error.message,
                },
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: "unknown".into(),
                    message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST /v1/enroll`.
    pub async fn enroll(
        &self,
        req: &twoway_api::EnrollRequest,
    ) -> Result<twoway_api::CertificateResponse, ClientError> {
        self.call(Method::POST, "/v1/enroll", Some(req)).await
    }

    /// `POST /v1/renew`.
    pub async fn renew(
        &self,
        req: &twoway_api::RenewRequest,
    ) -> Result<twoway_api::CertificateResponse, ClientError> {
        self.call(Method::POST, "/v1/renew", Some(req)).await
    }

    /// `POST /v1/revoke`.
    pub async fn revoke(
        &self,
        req: &twoway_api::RevokeRequest,
    ) -> Result<twoway_api::RevokeResponse, ClientError> {
        self.call(Method::POST, "/v1/revoke", Some(req)).await
    }

    /// `POST /v1/tokens`.
    pub async fn create_token(
        &self,
        req: &twoway_api::TokenRequest,
    ) -> Result<twoway_api::TokenResponse, ClientError> {
        self.call(Method::POST, "/v1/tokens", Some(req)).await
    }

    /// `POST /v1/sign` (admin): a certificate for a CSR.
    pub async fn sign(
        &self,
        req: &twoway_api::SignRequest,
    ) -> Result<twoway_api::CertificateResponse, ClientError> {
        self.call(Method::POST, "/v1/sign", Some(req)).await
    }

    /// `GET /v1/certificates?<query>` (the query already encoded).
    pub async fn list(&self, query: &str) -> Result<twoway_api::CertificateList, ClientError> {
        let path = if query.is_empty() {
            "/v1/certificates".to_string()
        } else {
            format!("/v1/certificates?{query}")
        };
        self.call::<(), _>(Method::GET, &path, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("https://ca.example:9000/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("ca.example", 9000));
        let t = parse_url("https://[::1]:9443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9443));
        assert_eq!(parse_url("https://ca.example").unwrap().port, 443);
        assert!(parse_url("http://ca.example").is_err());
        assert!(parse_url("https://ca.example:x").is_err());
        assert!(parse_url("https://ca.example/v1").is_err());
    }
}
