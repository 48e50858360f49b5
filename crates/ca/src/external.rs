//! Verifying client certificates from outside the mesh (a user's own CA, as Gateway
//! `MUTUAL` and Sidecar ingress TLS ask for): the chain must lead to one of the given CA
//! certificates and, when listed, the leaf must carry one of the expected SANs.
//!
//! webpki checks X.509 v3 chains. `openssl x509 -req` without an extension file signs
//! *version 1* leaves (seed 003's client certificate is one), which webpki refuses outright
//! while Envoy accepts them; a v1 leaf signed directly by a trusted CA is therefore checked
//! here, read with x509-parser: issuer name, validity period and signature with the
//! provider's algorithms.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::asn1_rs::{Any, FromDer};
use x509_parser::prelude::*;

use crate::tls::algorithms;

/// Why a client certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalVerifyError {
    #[error("the client certificate is not issued by the configured CA ({0})")]
    UnknownIssuer(String),
    #[error("the client certificate has expired")]
    Expired,
    #[error("the client certificate is not valid yet")]
    NotValidYet,
    #[error("the client certificate's signature does not verify with its issuer's key")]
    BadSignature,
    #[error("the client certificate carries none of the expected names ({})", .0.join(", "))]
    NoExpectedSan(Vec<String>),
    #[error("the client certificate cannot be read: {0}")]
    Malformed(String),
    #[error("the client certificate is not for client authentication: {0}")]
    Usage(String),
}

impl ExternalVerifyError {
    /// As a rustls error: the alert names the problem where TLS has a word for it
    /// (`unknown ca`, `certificate expired`), and logs keep the full reason.
    fn into_rustls(self) -> rustls::Error {
        let inner = match &self {
            ExternalVerifyError::UnknownIssuer(_) => CertificateError::UnknownIssuer,
            ExternalVerifyError::Expired => CertificateError::Expired,
            ExternalVerifyError::NotValidYet => CertificateError::NotValidYet,
            ExternalVerifyError::BadSignature => CertificateError::BadSignature,
            _ => CertificateError::Other(OtherError(Arc::new(self.clone()))),
        };
        // Keep our words for the log: an Other wrapper for the cases TLS names already
        // would lose the alert, so those are logged from the alert's own text.
        rustls::Error::InvalidCertificate(inner)
    }
}

/// The client CA and the rules a client certificate must meet.
#[derive(Debug)]
pub struct ExternalClientVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    cas: Vec<CertificateDer<'static>>,
    subjects: Vec<DistinguishedName>,
    mandatory: bool,
    subject_alt_names: Vec<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ExternalClientVerifier {
    /// `cas`: PEM bundle (several certificates allowed). `mandatory`: MUTUAL (a client
    /// without a certificate fails); otherwise OPTIONAL_MUTUAL.
    pub fn from_pem(
        cas_pem: &[u8],
        mandatory: bool,
        subject_alt_names: Vec<String>,
    ) -> Result<ExternalClientVerifier, String> {
        use rustls_pki_types::pem::PemObject;
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cas_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the CA bundle is not PEM: {e:?}"))?;
        if cas.is_empty() {
            return Err("the CA bundle holds no certificate".into());
        }
        let mut anchors = Vec::new();
        let mut subjects = Vec::new();
        for (i, der) in cas.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(der)
                .map_err(|e| format!("CA certificate {}: {e}", i + 1))?
                .to_owned();
            subjects.push(DistinguishedName::in_sequence(&anchor.subject));
            anchors.push(anchor);
        }
        Ok(ExternalClientVerifier {
            anchors,
            cas,
            subjects,
            mandatory,
            subject_alt_names,
            algorithms: algorithms(),
        })
    }

    /// The whole check, for tests and for the handshake.
    pub fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), ExternalVerifyError> {
        match webpki::EndEntityCert::try_from(leaf) {
            Ok(ee) => {
                ee.verify_for_usage(
                    self.algorithms.all,
                    &self.anchors,
                    intermediates,
                    now,
                    webpki::KeyUsage::client_auth(),
                    None,
                    None,
                )
                .map_err(|e| match e {
                    webpki::Error::CertExpired { .. } => ExternalVerifyError::Expired,
                    webpki::Error::CertNotValidYet { .. } => ExternalVerifyError::NotValidYet,
                    webpki::Error::UnknownIssuer => {
                        ExternalVerifyError::UnknownIssuer(issuer_of(leaf))
                    }
                    webpki::Error::InvalidSignatureForPublicKey => {
                        ExternalVerifyError::BadSignature
                    }
                    webpki::Error::RequiredEkuNotFoundContext(_) => {
                        ExternalVerifyError::Usage("its extended key usage lacks clientAuth".into())
                    }
                    other => ExternalVerifyError::Malformed(format!("{other:?}")),
                })?;
            }
            Err(webpki::Error::UnsupportedCertVersion) => self.verify_v1(leaf, now)?,
            Err(e) => return Err(ExternalVerifyError::Malformed(format!("{e:?}"))),
        }
        self.check_names(leaf)
    }

    fn verify_v1(
        &self,
        leaf: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<(), ExternalVerifyError> {
        let (_, cert) = X509Certificate::from_der(leaf)
            .map_err(|e| ExternalVerifyError::Malformed(e.to_string()))?;
        let now = now.as_secs() as i64;
        if now > cert.validity().not_after.timestamp() {
            return Err(ExternalVerifyError::Expired);
        }
        if now < cert.validity().not_before.timestamp() {
            return Err(ExternalVerifyError::NotValidYet);
        }
        let (tbs, sig_alg, signature) = signed_parts(&cert, leaf)
            .ok_or_else(|| ExternalVerifyError::Malformed("not DER".into()))?;
        let mut issuer_known = false;
        for ca in &self.cas {
            let Ok((_, issuer)) = X509Certificate::from_der(ca) else {
                continue;
            };
            if issuer.subject().as_raw() != cert.issuer().as_raw() {
                continue;
            }
            issuer_known = true;
            let spki = issuer.public_key();
            let Some(key_alg) = key_algorithm(spki) else {
                continue;
            };
            let key = spki.subject_public_key.data.as_ref();
            let verified = self.algorithms.all.iter().any(|alg| {
                alg.signature_alg_id().as_ref() == sig_alg.as_slice()
                    && alg.public_key_alg_id().as_ref() == key_alg.as_slice()
                    && alg.verify_signature(key, tbs, signature).is_ok()
            });
            if verified {
                return Ok(());
            }
        }
        if issuer_known {
            Err(ExternalVerifyError::BadSignature)
        } else {
            Err(ExternalVerifyError::UnknownIssuer(issuer_of(leaf)))
        }
    }

    fn check_names(&self, leaf: &CertificateDer<'_>) -> Result<(), ExternalVerifyError> {
        if self.subject_alt_names.is_empty() {
            return Ok(());
        }
        let (_, cert) = X509Certificate::from_der(leaf)
            .map_err(|e| ExternalVerifyError::Malformed(e.to_string()))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::URI(u) => names.push(u.to_string()),
                    GeneralName::DNSName(d) => names.push(d.to_string()),
                    _ => {}
                }
            }
        }
        if names.iter().any(|n| self.subject_alt_names.contains(n)) {
            Ok(())
        } else {
            Err(ExternalVerifyError::NoExpectedSan(
                self.subject_alt_names.clone(),
            ))
        }
    }
}

fn is_v1(cert: &CertificateDer<'_>) -> bool {
    X509Certificate::from_der(cert).is_ok_and(|(_, c)| c.version() == X509Version::V1)
}

impl ExternalClientVerifier {
    /// The handshake signature of a v1 leaf (webpki cannot parse one to check it).
    fn verify_with_leaf_key(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let bad = || rustls::Error::InvalidCertificate(CertificateError::BadSignature);
        let (_, c) = X509Certificate::from_der(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let spki = c.public_key();
        let key_alg = key_algorithm(spki).ok_or_else(bad)?;
        let key = spki.subject_public_key.data.as_ref();
        let algs = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or_else(bad)?;
        algs.iter()
            .any(|alg| {
                alg.public_key_alg_id().as_ref() == key_alg.as_slice()
                    && alg.verify_signature(key, message, dss.signature()).is_ok()
            })
            .then(HandshakeSignatureValid::assertion)
            .ok_or_else(bad)
    }
}

fn issuer_of(leaf: &CertificateDer<'_>) -> String {
    X509Certificate::from_der(leaf)
        .map(|(_, c)| format!("issuer {}", crate::inspect::rfc2253(c.issuer())))
        .unwrap_or_else(|_| "unreadable issuer".into())
}

/// The DER contents of an AlgorithmIdentifier in `spki` (the SubjectPublicKeyInfo), the
/// form webpki names its algorithms by.
fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Option<Vec<u8>> {
    let (_, seq) = Any::from_der(spki.raw).ok()?;
    let (_, alg) = Any::from_der(seq.data).ok()?;
    Some(alg.data.to_vec())
}

/// A certificate's signed bytes (its TBS), its signature algorithm (as DER contents) and
/// its signature.
fn signed_parts<'a>(
    cert: &'a X509Certificate<'a>,
    der: &'a [u8],
) -> Option<(&'a [u8], Vec<u8>, &'a [u8])> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let (_, outer) = Any::from_der(der).ok()?;
    let (rest, _tbs) = Any::from_der(outer.data).ok()?;
    let (_, alg) = Any::from_der(rest).ok()?;
    Some((
        cert.tbs_certificate.as_ref(),
        alg.data.to_vec(),
        cert.signature_value.data.as_ref(),
    ))
}

impl ClientCertVerifier for ExternalClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|()| ClientCertVerified::assertion())
            .map_err(|e| {
                tracing::debug!(reason = %e, "client certificate refused");
                e.into_rustls()
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if is_v1(cert) {
            return self.verify_with_leaf_key(message, cert, dss);
        }
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if is_v1(cert) {
            // TLS 1.3 forbids PKCS#1 v1.5 and SHA-1 signatures in the handshake.
            use rustls::SignatureScheme as S;
            let legacy = matches!(
                dss.scheme,
                S::RSA_PKCS1_SHA1
                    | S::RSA_PKCS1_SHA256
                    | S::RSA_PKCS1_SHA384
                    | S::RSA_PKCS1_SHA512
                    | S::ECDSA_SHA1_Legacy
            );
            if legacy {
                return Err(
                    rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into(),
                );
            }
            return self.verify_with_leaf_key(message, cert, dss);
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
