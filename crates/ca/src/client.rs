//! The proxy's side of issuance: make a key and a CSR (the key never leaves this process),
//! ask the CA with the bootstrap token, keep the result in a [`CredentialStore`], and renew
//! at half-life with jitter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, SanType};
use tessera_contract::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use tessera_contract::istio_ca::IstioCertificateRequest;
use tonic::transport::Channel;

use crate::authority::{is_self_signed, KeyAlgorithm};
use crate::credentials::{CredentialStore, Credentials, CredentialsError};
use crate::spiffe::SpiffeId;
use crate::verify::{PeerRole, TrustBundle};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the CA: {0}")]
    Unreachable(String),
    #[error("the CA refused the request ({code:?}): {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("cannot read the bootstrap token {path}: {reason}")]
    Token { path: PathBuf, reason: String },
    #[error("cannot make a key or CSR: {0}")]
    Csr(String),
    #[error("the CA's answer is unusable: {0}")]
    BadResponse(String),
    #[error("the CA's certificate is unusable: {0}")]
    Credentials(#[from] CredentialsError),
}

/// Where the bootstrap token comes from. It is read for every request, so a token file
/// that the runtime refreshes (as the kubelet refreshes a projected service-account
/// token) keeps renewals working past the first token's expiry.
pub trait TokenSource: Send + Sync + 'static {
    fn token(&self) -> Result<String, ClientError>;
}

/// A token given once (tests, one-shot fetches).
#[derive(Debug, Clone)]
pub struct StaticToken(pub String);

impl TokenSource for StaticToken {
    fn token(&self) -> Result<String, ClientError> {
        Ok(self.0.clone())
    }
}

/// A token read from a file on every request.
#[derive(Debug, Clone)]
pub struct TokenFile(pub PathBuf);

impl TokenSource for TokenFile {
    fn token(&self) -> Result<String, ClientError> {
        std::fs::read_to_string(&self.0)
            .map(|t| t.trim().to_string())
            .map_err(|e| ClientError::Token {
                path: self.0.clone(),
                reason: e.to_string(),
            })
    }
}

/// What to ask for.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// The mesh trust domain (the bundle verifies peers against it).
    pub trust_domain: String,
    /// The identity this workload expects to be. When set, the CSR names it, so a token
    /// for another service account is refused by the CA instead of silently accepted.
    pub identity: Option<SpiffeId>,
    /// Requested lifetime; `None` for the CA's default (24 h).
    pub ttl: Option<Duration>,
    pub algorithm: KeyAlgorithm,
}

/// A gRPC client of the CA.
#[derive(Debug, Clone)]
pub struct CaClient {
    inner: IstioCertificateServiceClient<Channel>,
}

impl CaClient {
    /// A client of the CA listening on a Unix socket. Connects on first use.
    pub fn unix(path: impl Into<PathBuf>) -> CaClient {
        let channel =
            tessera_contract::transport::unix_channel(path.into(), Some(Duration::from_secs(15)));
        CaClient {
            inner: IstioCertificateServiceClient::new(channel),
        }
    }

    /// One `CreateCertificate` call: the chain as the CA sent it (leaf first, roots last).
    pub async fn create_certificate(
        &self,
        csr_pem: &str,
        validity: Option<Duration>,
        token: &str,
    ) -> Result<Vec<String>, ClientError> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem.to_string(),
            validity_duration: validity.map_or(0, |d| d.as_secs().max(1) as i64),
        });
        let value = format!("Bearer {token}").parse().map_err(|_| {
            ClientError::Csr("the token has characters a header cannot carry".into())
        })?;
        request.metadata_mut().insert("authorization", value);
        let mut inner = self.inner.clone();
        match inner.create_certificate(request).await {
            Ok(response) => Ok(response.into_inner().cert_chain),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                Err(ClientError::Unreachable(status.message().to_string()))
            }
            Err(status) => Err(ClientError::Refused {
                code: status.code(),
                message: status.message().to_string(),
            }),
        }
    }

    /// Makes a fresh key and CSR, asks the CA, and checks what comes back.
    pub async fn fetch(
        &self,
        tokens: &dyn TokenSource,
        options: &IdentityOptions,
    ) -> Result<(Credentials, TrustBundle), ClientError> {
        let key = options
            .algorithm
            .generate()
            .map_err(|e| ClientError::Csr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(id) = &options.identity {
            let uri = id
                .to_string()
                .try_into()
                .map_err(|e| ClientError::Csr(format!("{e:?}")))?;
            params.subject_alt_names = vec![SanType::URI(uri)];
        }
        let csr = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|e| ClientError::Csr(e.to_string()))?;
        let token = tokens.token()?;
        let chain = self.create_certificate(&csr, options.ttl, &token).await?;
        let (roots, certs): (Vec<&String>, Vec<&String>) =
            chain.iter().partition(|pem| is_self_signed(pem));
        if roots.is_empty() {
            return Err(ClientError::BadResponse(
                "the chain ends without a root certificate".into(),
            ));
        }
        let bundle = TrustBundle::from_pem(
            &roots.iter().map(|s| s.as_str()).collect::<String>(),
            &options.trust_domain,
        )
        .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let credentials = Credentials::from_pem(
            &certs.iter().map(|s| s.as_str()).collect::<String>(),
            &key.serialize_pem(),
        )?;
        // What we got must be usable: it chains to the roots sent, in our trust domain,
        // and is the identity we asked for.
        let expected = options.identity.clone().map(|id| vec![id]);
        bundle
            .verify(
                &credentials.chain,
                PeerRole::Client,
                expected.as_deref(),
                rustls_pki_types::UnixTime::now(),
            )
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        Ok((credentials, bundle))
    }
}

/// When to renew: at half of the lifetime left when the certificate was obtained, moved by
/// up to ±5 % of it (`jitter` in [0, 1)) so proxies started together do not renew
/// together; never sooner than half a second, so a very short TTL cannot spin.
pub fn renewal_delay(obtained_at: SystemTime, not_after: SystemTime, jitter: f64) -> Duration {
    let lifetime = not_after.duration_since(obtained_at).unwrap_or_default();
    let fraction = 0.45 + 0.10 * jitter.clamp(0.0, 1.0);
    lifetime.mul_f64(fraction).max(Duration::from_millis(500))
}

/// After a failed renewal: 1 s, 2 s, 4 s ... at most 30 s, and never past the point where
/// half of the time left would be spent waiting.
pub fn retry_delay(attempt: u32, time_left: Duration) -> Duration {
    let backoff = Duration::from_secs(1 << attempt.min(5)).min(Duration::from_secs(30));
    backoff.min(time_left / 2).max(Duration::from_millis(200))
}

fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// A running renewal; dropping it stops the renewal (the store keeps its last value).
#[derive(Debug)]
pub struct Renewal {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fetches the first certificate, then keeps renewing it in the background.
pub async fn start(
    client: CaClient,
    tokens: Arc<dyn TokenSource>,
    options: IdentityOptions,
) -> Result<(CredentialStore, Renewal), ClientError> {
    let (credentials, bundle) = client.fetch(tokens.as_ref(), &options).await?;
    tracing::info!(cert = %credentials.describe(), "workload certificate obtained");
    let store = CredentialStore::new(credentials, bundle);
    let task = tokio::spawn(renew_forever(client, tokens, options, store.clone()));
    Ok((store, Renewal { task }))
}

async fn renew_forever(
    client: CaClient,
    tokens: Arc<dyn TokenSource>,
    options: IdentityOptions,
    store: CredentialStore,
) {
    loop {
        let current = store.credentials();
        tokio::time::sleep(renewal_delay(
            current.obtained_at,
            current.not_after,
            jitter(),
        ))
        .await;
        let mut attempt = 0;
        loop {
            match client.fetch(tokens.as_ref(), &options).await {
                Ok((credentials, bundle)) => {
                    tracing::info!(
                        old = %current.serial_hex,
                        cert = %credentials.describe(),
                        "workload certificate rotated"
                    );
                    store.replace(credentials, Some(bundle));
                    break;
                }
                Err(e) => {
                    let left = current.expires_in(SystemTime::now());
                    let delay = retry_delay(attempt, left);
                    if left.is_zero() {
                        tracing::error!(error = %e, cert = %current.describe(), "renewal failed and the certificate has expired; retrying");
                    } else {
                        tracing::warn!(error = %e, expires_in_s = left.as_secs(), retry_in_ms = delay.as_millis() as u64, "certificate renewal failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_half_life_with_jitter() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(24 * 3600);
        // (lifetime left, jitter, expected delay)
        let rows = [
            (day, 0.5, day / 2),
            (day, 0.0, day.mul_f64(0.45)),
            (day, 0.999_999, day.mul_f64(0.549_999_9)),
            (Duration::from_secs(4), 0.5, Duration::from_secs(2)),
            // A certificate that is already expired, or nearly: retry soon, never spin.
            (Duration::ZERO, 0.5, Duration::from_millis(500)),
            (Duration::from_millis(100), 0.5, Duration::from_millis(500)),
        ];
        for (left, jitter, want) in rows {
            let got = renewal_delay(t0, t0 + left, jitter);
            let diff = got.abs_diff(want);
            assert!(
                diff < Duration::from_millis(1),
                "{left:?} {jitter}: {got:?} != {want:?}"
            );
        }
    }

    #[test]
    fn retries_back_off_within_the_time_left() {
        let hour = Duration::from_secs(3600);
        let rows = [
            (0, hour, Duration::from_secs(1)),
            (1, hour, Duration::from_secs(2)),
            (4, hour, Duration::from_secs(16)),
            (9, hour, Duration::from_secs(30)),
            (3, Duration::from_secs(4), Duration::from_secs(2)),
            (3, Duration::ZERO, Duration::from_millis(200)),
        ];
        for (attempt, left, want) in rows {
            assert_eq!(
                retry_delay(attempt, left),
                want,
                "attempt {attempt}, {left:?} left"
            );
        }
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
