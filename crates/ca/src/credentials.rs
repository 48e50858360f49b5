//! A workload's current certificate and trust bundle behind a cheap, cloneable handle.
//!
//! Handshakes read the current values (`ArcSwap` loads, no lock); a rotation swaps them.
//! Connections already established keep the keys they negotiated, so a swap never disturbs
//! them. Watchers learn of each swap through a `watch` channel (the generation counter).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use x509_parser::prelude::*;

use crate::inspect::rfc3339;
use crate::spiffe::SpiffeId;
use crate::verify::{identity_of, TrustBundle, VerifyError};

/// Why a certificate and key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("no certificate in the chain")]
    NoCertificate,
    #[error("the certificate chain is not PEM: {0}")]
    BadChain(String),
    #[error("the private key is not usable: {0}")]
    BadKey(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate: {0}")]
    Identity(#[from] VerifyError),
}

/// One workload certificate with its key, parsed once.
#[derive(Debug)]
pub struct Credentials {
    pub identity: SpiffeId,
    /// Leaf first, then intermediates (never the root).
    pub chain: Vec<CertificateDer<'static>>,
    pub certified_key: Arc<CertifiedKey>,
    /// Serial in lowercase hex, as `/certs` and `proxy-config secret` show it.
    pub serial_hex: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When this process obtained it; renewal is scheduled from here, not from the
    /// backdated not-before.
    pub obtained_at: SystemTime,
}

impl Credentials {
    /// Parses a PEM chain (leaf first) and a PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Credentials, CredentialsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| CredentialsError::BadChain(format!("{e:?}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| CredentialsError::BadKey(format!("{e:?}")))?;
        Credentials::from_der(chain, key)
    }

    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Credentials, CredentialsError> {
        let leaf = chain.first().ok_or(CredentialsError::NoCertificate)?;
        let identity = identity_of(leaf)?;
        let (_, cert) =
            parse_x509_certificate(leaf).map_err(|e| CredentialsError::BadChain(e.to_string()))?;
        let serial_hex = cert.raw_serial_as_string().replace(':', "");
        let to_system =
            |t: ASN1Time| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
        let not_before = to_system(cert.validity().not_before);
        let not_after = to_system(cert.validity().not_after);
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified_key =
            CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => CredentialsError::KeyMismatch,
                other => CredentialsError::BadKey(other.to_string()),
            })?;
        Ok(Credentials {
            identity,
            chain,
            certified_key: Arc::new(certified_key),
            serial_hex,
            not_before,
            not_after,
            obtained_at: SystemTime::now(),
        })
    }

    pub fn expires_in(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        format!(
            "{} serial {} valid until {}",
            self.identity,
            self.serial_hex,
            rfc3339(::time::OffsetDateTime::from(self.not_after))
        )
    }
}

/// The handle a proxy holds: current credentials and trust bundle, swapped on rotation.
#[derive(Clone)]
pub struct CredentialStore {
    inner: Arc<Inner>,
}

struct Inner {
    credentials: ArcSwap<Credentials>,
    bundle: ArcSwap<TrustBundle>,
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialStore")
            .field("identity", &self.credentials().identity)
            .field("generation", &self.generation())
            .finish()
    }
}

impl CredentialStore {
    pub fn new(credentials: Credentials, bundle: TrustBundle) -> CredentialStore {
        CredentialStore {
            inner: Arc::new(Inner {
                credentials: ArcSwap::from_pointee(credentials),
                bundle: ArcSwap::from_pointee(bundle),
                generation: watch::channel(0).0,
            }),
        }
    }

    pub fn credentials(&self) -> Arc<Credentials> {
        self.inner.credentials.load_full()
    }

    pub fn trust_bundle(&self) -> Arc<TrustBundle> {
        self.inner.bundle.load_full()
    }

    /// Replaces the credentials (and the bundle, when given); new handshakes use them.
    pub fn replace(&self, credentials: Credentials, bundle: Option<TrustBundle>) {
        self.inner.credentials.store(Arc::new(credentials));
        if let Some(bundle) = bundle {
            self.inner.bundle.store(Arc::new(bundle));
        }
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// How many times the credentials were replaced.
    pub fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    /// A receiver that changes on every replacement.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }
}
