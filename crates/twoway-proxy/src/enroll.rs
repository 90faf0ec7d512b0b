//! The in-process agent of a listener that gets its certificate from a twoway CA.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use twoway_agent::{AgentConfig, AgentStatus};

use crate::config::EnrollSpec;
use crate::ProxyError;

/// Starts the agent of listener `name` and waits until it holds a valid certificate (enrolled, or
/// found one still valid in its state directory). The agent keeps running on the current
/// runtime and renews; the reloader notices each new certificate like a changed file.
pub async fn start(name: &str, e: &EnrollSpec) -> Result<Arc<AgentStatus>, ProxyError> {
    let mut cfg = AgentConfig::new(
        e.ca.clone(),
        e.ca_fingerprint.clone(),
        e.sans.clone(),
        e.storage.clone(),
    );
    cfg.key_type = e.key_type;
    let status = Arc::new(AgentStatus::default());
    let listener = name.to_owned();
    let fail = |detail: String, source: Option<&twoway_agent::AgentError>| {
        use twoway_agent::{AgentError as A, ClientError as C};
        ProxyError::Enroll {
            listener: listener.clone(),
            ca: e.ca.clone(),
            detail,
            status: match source {
                Some(A::Client(C::Api { status, .. })) => Some(*status),
                _ => None,
            },
            config: matches!(
                source,
                Some(A::NeedToken(_) | A::Client(C::FingerprintMismatch { .. } | C::Config(_)))
            ),
        }
    };
    cfg.token = match (&e.token, &e.token_file) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(f)) => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(f).map_err(|err| {
                ProxyError::Config(format!(
                    "listener {listener:?}: cannot read enroll.token_file {}: {err}",
                    f.display()
                ))
            })?);
            let line = text.lines().next().unwrap_or("").trim().to_owned();
            if line.is_empty() {
                return Err(ProxyError::Config(format!(
                    "listener {listener:?}: enroll.token_file {} is empty",
                    f.display()
                )));
            }
            Some(line)
        }
        (None, None) => None,
    };
    let mut task = tokio::spawn(twoway_agent::run(cfg, status.clone()));
    let deadline = tokio::time::Instant::now() + e.timeout;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if status.not_after.load(Ordering::Relaxed) > now {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            task.abort();
            let why = status
                .last_error()
                .unwrap_or_else(|| "no answer yet".into());
            return Err(fail(
                format!(
                    "no certificate after {:.0} s (last error: {why}); check that the CA is up and reachable, or raise enroll.timeout_secs",
                    e.timeout.as_secs_f64()
                ),
                None,
            ));
        }
        tokio::select! {
            r = &mut task => {
                return Err(match r {
                    Ok(Ok(())) => fail("the agent stopped without a certificate".into(), None),
                    Ok(Err(err)) => fail(err.to_string(), Some(&err)),
                    Err(join) => fail(format!("the agent failed: {join}"), None),
                });
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    tracing::info!(listener = %name, ca = %e.ca, storage = %e.storage, "certificate obtained from the CA; renewing in the background");
    let name = name.to_owned();
    tokio::spawn(async move {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(listener = %name, error = %err, "the in-process agent stopped; the listener keeps its certificate until it expires")
            }
            Err(join) if join.is_cancelled() => {}
            Err(join) => {
                tracing::error!(listener = %name, error = %join, "the in-process agent failed")
            }
        }
    });
    Ok(status)
}
