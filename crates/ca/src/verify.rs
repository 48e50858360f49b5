//! Verifying a peer: the chain must lead to a mesh root (rustls-webpki), AND the leaf must
//! carry exactly one well-formed SPIFFE URI in the mesh trust domain, AND, when the caller
//! knows whom it expects, that identity.
//!
//! webpki alone checks only the chain: a certificate our CA signed for
//! `spiffe://evil.example/...` passes it. The SPIFFE check here closes that hole.

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::prelude::*;

use crate::spiffe::SpiffeId;

/// The roots a mesh trusts (several during a root rotation) and its trust domain.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    anchors: Vec<TrustAnchor<'static>>,
    roots: Vec<CertificateDer<'static>>,
    trust_domain: String,
}

/// Which side is being verified: a server must carry serverAuth, a client clientAuth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Server,
    Client,
}

/// Why a peer was refused, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the peer sent no certificate")]
    NoCertificate,
    #[error("the certificate chain does not lead to a mesh root: {0}")]
    Chain(String),
    #[error("the certificate has no SPIFFE identity (no spiffe:// URI SAN)")]
    NoIdentity,
    #[error("the certificate has {0} SPIFFE identities; a workload certificate has exactly one")]
    SeveralIdentities(usize),
    #[error("malformed SPIFFE identity: {0}")]
    Malformed(String),
    #[error("identity {found} is outside the mesh trust domain {expected}")]
    ForeignTrustDomain { found: String, expected: String },
    #[error("identity {found} is not the one expected ({})", expected.join(" or "))]
    Unexpected {
        found: String,
        expected: Vec<String>,
    },
    #[error("the trust bundle is unusable: {0}")]
    BadBundle(String),
}

impl TrustBundle {
    /// Builds a bundle from PEM roots.
    pub fn from_pem(roots_pem: &str, trust_domain: &str) -> Result<TrustBundle, VerifyError> {
        use rustls_pki_types::pem::PemObject;
        let ders: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(roots_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| VerifyError::BadBundle(format!("{e:?}")))?;
        if ders.is_empty() {
            return Err(VerifyError::BadBundle("no root certificate".into()));
        }
        let anchors = ders
            .iter()
            .map(|d| {
                webpki::anchor_from_trusted_cert(d)
                    .map(|a| a.to_owned())
                    .map_err(|e| VerifyError::BadBundle(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustBundle {
            anchors,
            roots: ders,
            trust_domain: trust_domain.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificates, as given.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// Verifies a peer's chain (leaf first) at `now` and returns its identity.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        role: PeerRole,
        expected: Option<&[SpiffeId]>,
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        let (leaf, intermediates) = chain.split_first().ok_or(VerifyError::NoCertificate)?;
        let ee = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| VerifyError::Chain(chain_reason(&e)))?;
        let usage = match role {
            PeerRole::Server => webpki::KeyUsage::server_auth(),
            PeerRole::Client => webpki::KeyUsage::client_auth(),
        };
        ee.verify_for_usage(
            crate::crypto::algorithms().all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| VerifyError::Chain(chain_reason(&e)))?;
        let id = identity_of(leaf)?;
        if id.trust_domain() != self.trust_domain {
            return Err(VerifyError::ForeignTrustDomain {
                found: id.to_string(),
                expected: self.trust_domain.clone(),
            });
        }
        if let Some(expected) = expected {
            if !expected.contains(&id) {
                return Err(VerifyError::Unexpected {
                    found: id.to_string(),
                    expected: expected.iter().map(ToString::to_string).collect(),
                });
            }
        }
        Ok(id)
    }
}

/// The single SPIFFE identity of a leaf certificate.
pub fn identity_of(leaf: &CertificateDer<'_>) -> Result<SpiffeId, VerifyError> {
    let (_, cert) = parse_x509_certificate(leaf).map_err(|e| VerifyError::Chain(e.to_string()))?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(VerifyError::Malformed(e.to_string())),
    };
    match uris.as_slice() {
        [] => Err(VerifyError::NoIdentity),
        [one] => one
            .parse()
            .map_err(|e: crate::spiffe::SpiffeError| VerifyError::Malformed(e.to_string())),
        many => Err(VerifyError::SeveralIdentities(many.len())),
    }
}

/// webpki's errors in words.
fn chain_reason(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => "issued by an unknown CA".into(),
        webpki::Error::CertExpired { .. } => "the certificate has expired".into(),
        webpki::Error::InvalidSignatureForPublicKey => {
            "a signature in the chain does not match the mesh root's key (a CA with the same name but another key)".into()
        }
        webpki::Error::CertNotValidYet { .. } => "the certificate is not valid yet".into(),
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "the certificate is not allowed for this use (extended key usage)".into()
        }
        other => format!("{other}"),
    }
}
