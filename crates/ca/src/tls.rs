//! rustls glue for mesh mTLS: certificate resolvers and verifiers that read a
//! [`CredentialStore`], so configs are built once and rotation needs no rebuild.
//!
//! Both verifiers delegate to [`TrustBundle::verify`]: chain to a mesh root AND a SPIFFE
//! identity in the trust domain AND, when known, an expected identity. The server name a
//! client dials is not checked; the SPIFFE identity takes its place, as in Istio.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::credentials::CredentialStore;
use crate::spiffe::SpiffeId;
use crate::verify::{PeerRole, VerifyError};

pub use crate::crypto::{algorithms, provider};

/// A rustls error that carries the mesh's reason, so handshake failures log it.
pub fn refusal(e: VerifyError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn chain_of<'a>(
    end_entity: &CertificateDer<'a>,
    intermediates: &[CertificateDer<'a>],
) -> Vec<CertificateDer<'a>> {
    let mut chain = Vec::with_capacity(1 + intermediates.len());
    chain.push(end_entity.clone());
    chain.extend(intermediates.iter().cloned());
    chain
}

/// Serves the store's current certificate on every handshake.
#[derive(Debug)]
pub struct StoreResolver(pub CredentialStore);

impl StoreResolver {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0.credentials().certified_key.clone()
    }
}

impl ResolvesServerCert for StoreResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for StoreResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a server: mesh root, trust domain, and one of the expected identities (when
/// the caller knows them; otherwise any identity of the trust domain).
#[derive(Debug)]
pub struct MeshServerVerifier {
    store: CredentialStore,
    expected: Option<Vec<SpiffeId>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MeshServerVerifier {
    pub fn new(store: CredentialStore, expected: Option<Vec<SpiffeId>>) -> MeshServerVerifier {
        MeshServerVerifier {
            store,
            expected,
            algorithms: algorithms(),
        }
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.store
            .trust_bundle()
            .verify(
                &chain_of(end_entity, intermediates),
                PeerRole::Server,
                self.expected.as_deref(),
                now,
            )
            .map(|_| ServerCertVerified::assertion())
            .map_err(refusal)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies a client: mesh root and trust domain. `mandatory` is STRICT's rule (a client
/// without a certificate fails the handshake); otherwise a certificate is asked for but a
/// client may go without one.
#[derive(Debug)]
pub struct MeshClientVerifier {
    store: CredentialStore,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MeshClientVerifier {
    pub fn new(store: CredentialStore, mandatory: bool) -> MeshClientVerifier {
        MeshClientVerifier {
            store,
            mandatory,
            algorithms: algorithms(),
        }
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.store
            .trust_bundle()
            .verify(
                &chain_of(end_entity, intermediates),
                PeerRole::Client,
                None,
                now,
            )
            .map(|_| ClientCertVerified::assertion())
            .map_err(refusal)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server config for mesh mTLS that presents the store's certificate and verifies
/// clients against its bundle.
pub fn server_config(
    store: &CredentialStore,
    client_cert_mandatory: bool,
    alpn: &[&[u8]],
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(MeshClientVerifier::new(
            store.clone(),
            client_cert_mandatory,
        )))
        .with_cert_resolver(Arc::new(StoreResolver(store.clone())));
    // No resumption: a resumed session skips the certificates, so after a rotation (or
    // a policy change) it would keep vouching for the old ones.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    // The server's order of cipher suites decides (strongest first), not the client's.
    config.ignore_client_order = true;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client config for mesh mTLS that presents the store's certificate and accepts only
/// the expected server identities (any of the trust domain when `None`).
pub fn client_config(
    store: &CredentialStore,
    expected: Option<Vec<SpiffeId>>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(
            store.clone(),
            expected,
        )))
        .with_client_cert_resolver(Arc::new(StoreResolver(store.clone())));
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The verified SPIFFE identity of a connection's peer (after the handshake).
pub fn peer_identity(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    peer_certificates
        .and_then(|c| c.first())
        .and_then(|leaf| crate::verify::identity_of(leaf).ok())
}

/// A handshake failure in an operator's words: the mesh verifier's reason when it refused,
/// else rustls' own. Accepts the `io::Error` tokio-rustls returns.
pub fn handshake_reason(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls_reason(tls),
        None => e.to_string(),
    }
}

pub fn tls_reason(e: &rustls::Error) -> String {
    use rustls::AlertDescription as Alert;
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            match inner.downcast_ref::<VerifyError>() {
                Some(v) => v.to_string(),
                None => inner.to_string(),
            }
        }
        rustls::Error::NoCertificatesPresented => {
            "the peer sent no certificate (a client certificate is required)".into()
        }
        rustls::Error::AlertReceived(Alert::CertificateRequired) => {
            "the server requires a client certificate and none was sent".into()
        }
        rustls::Error::AlertReceived(Alert::BadCertificate | Alert::UnknownCA) => {
            "the peer refused our certificate".into()
        }
        rustls::Error::NoApplicationProtocol => {
            "no common ALPN protocol (the peer does not speak mesh mTLS)".into()
        }
        other => other.to_string(),
    }
}
