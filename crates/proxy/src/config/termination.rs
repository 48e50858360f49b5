//! TLS terminated with the user's certificate (Gateway servers, Sidecar ingress TLS):
//! a [`ServerTls`] and the key material it names turned into a ready acceptor, or the
//! reason it cannot serve yet (a Secret not created, a file not mounted). A server that
//! cannot serve refuses its handshakes; the rest of the configuration still applies, as
//! Envoy keeps a listener whose secret is still warming.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tessera_ca::external::ExternalClientVerifier;
use tessera_ca::tls::{provider, MeshClientVerifier, StoreResolver};
use tessera_ca::CredentialStore;
use tessera_contract::config::{
    CaBundleSource, KeyPairSource, SecretMaterial, ServerTls, TerminationMode, TlsVersion,
    VolumeTable,
};
use tokio_rustls::TlsAcceptor;

/// One piece of key material a proxy serves, as `proxy-config secret` lists it.
#[derive(Debug, Clone)]
pub struct SecretInUse {
    /// The SDS resource name (`file-cert:...`, `kubernetes://...`).
    pub name: String,
    /// The certificates read (leaf first); empty while warming.
    pub certs: Vec<CertificateDer<'static>>,
    /// Why it is not served, while it is not.
    pub warming: Option<String>,
    /// A client CA bundle (listed after the workload's own secrets).
    pub is_ca: bool,
}

/// A server's TLS, ready or not.
#[derive(Clone)]
pub enum Termination {
    Ready(TlsAcceptor),
    /// Handshakes are refused with this reason (logged on every refusal).
    Unavailable(String),
}

impl std::fmt::Debug for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::Ready(_) => f.write_str("Ready"),
            Termination::Unavailable(r) => write!(f, "Unavailable({r})"),
        }
    }
}

/// ALPN a terminating server offers (Istio's gateways: h2 and http/1.1).
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Builds the acceptor for `tls`. Every secret it names is added to `used` (also when it
/// is missing), so the admin endpoint can show it as warming.
pub fn build(
    tls: &ServerTls,
    material: &Material<'_>,
    alpn: &[&[u8]],
    used: &mut Vec<SecretInUse>,
) -> Termination {
    match try_build(tls, material, alpn, used) {
        Ok(config) => Termination::Ready(TlsAcceptor::from(Arc::new(config))),
        Err(reason) => Termination::Unavailable(reason),
    }
}

/// Where key material is read from.
pub struct Material<'a> {
    /// Pushed `credentialName` Secrets.
    pub secrets: &'a [SecretMaterial],
    /// The workload certificate and mesh roots.
    pub store: &'a CredentialStore,
    /// The pod's mounts: manifest paths are read through it.
    pub volumes: &'a VolumeTable,
}

fn try_build(
    tls: &ServerTls,
    material: &Material<'_>,
    alpn: &[&[u8]],
    used: &mut Vec<SecretInUse>,
) -> Result<ServerConfig, String> {
    let store = material.store;
    let key = key_pair(&tls.key_pair, material, used);
    let verifier = client_ca(tls, material, used);
    let (key, verifier) = (key?, verifier?);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::V1_2, &rustls::version::TLS12),
        (TlsVersion::V1_3, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| {
        tls.min_protocol_version.is_none_or(|min| *v >= min)
            && tls.max_protocol_version.is_none_or(|max| *v <= max)
    })
    .map(|(_, v)| v)
    .collect();
    if versions.is_empty() {
        return Err("minProtocolVersion is above maxProtocolVersion".into());
    }
    let mut crypto = (*provider()).clone();
    if !tls.cipher_suites.is_empty() {
        crypto.cipher_suites.retain(|s| {
            s.version() == &rustls::version::TLS13
                || tls
                    .cipher_suites
                    .iter()
                    .any(|name| openssl_name(s.suite()) == Some(name.as_str()))
        });
    }
    let builder = ServerConfig::builder_with_provider(Arc::new(crypto))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = match key {
        Served::Fixed(ck) => builder.with_cert_resolver(Arc::new(Fixed(ck))),
        Served::Workload => builder.with_cert_resolver(Arc::new(StoreResolver(store.clone()))),
    };
    // The server's order of cipher suites decides (strongest first), not the client's.
    config.ignore_client_order = true;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

enum Served {
    Fixed(Arc<CertifiedKey>),
    Workload,
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn read(path: &Path, volumes: &VolumeTable) -> Result<Vec<u8>, String> {
    std::fs::read(volumes.resolve(path)).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certs_of(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: not PEM certificates ({e:?})"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate in it"));
    }
    Ok(certs)
}

fn secret<'a>(secrets: &'a [SecretMaterial], name: &str) -> Result<&'a SecretMaterial, String> {
    let s = secrets
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("{name}: no such secret was pushed"))?;
    match &s.error {
        Some(e) => Err(format!("{name}: {e}")),
        None => Ok(s),
    }
}

/// Records `name` as used: its certificates, or why it is warming.
fn note(
    used: &mut Vec<SecretInUse>,
    name: String,
    is_ca: bool,
    result: &Result<Vec<CertificateDer<'static>>, String>,
) {
    if used.iter().any(|u| u.name == name) {
        return;
    }
    used.push(SecretInUse {
        name,
        certs: result.clone().unwrap_or_default(),
        warming: result.as_ref().err().cloned(),
        is_ca,
    });
}

fn key_pair(
    source: &KeyPairSource,
    material: &Material<'_>,
    used: &mut Vec<SecretInUse>,
) -> Result<Served, String> {
    let secrets = material.secrets;
    let (chain_pem, key_pem, what) = match source {
        KeyPairSource::Workload => return Ok(Served::Workload),
        KeyPairSource::Files {
            cert_chain,
            private_key,
        } => {
            let read_both = read(cert_chain, material.volumes)
                .and_then(|c| read(private_key, material.volumes).map(|k| (c, k)));
            match read_both {
                Ok((c, k)) => (c, k, source.resource_name()),
                Err(e) => {
                    note(used, source.resource_name(), false, &Err(e.clone()));
                    return Err(e);
                }
            }
        }
        KeyPairSource::Secret { name } => match secret(secrets, name) {
            Ok(s) => (
                s.cert_chain.clone().unwrap_or_default().into_bytes(),
                s.private_key.clone().unwrap_or_default().into_bytes(),
                name.clone(),
            ),
            Err(e) => {
                note(used, name.clone(), false, &Err(e.clone()));
                return Err(e);
            }
        },
    };
    let chain = certs_of(&chain_pem, &what);
    note(used, what.clone(), false, &chain);
    let chain = chain?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{what}: the private key is not PEM ({e:?})"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{what}: the private key cannot be used ({e})"))?;
    let certified = CertifiedKey::new(chain, signing);
    // webpki cannot parse a version 1 leaf (what `openssl x509 -req` signs without an
    // extension file); Envoy serves those, so only v3 leaves get the consistency check.
    let v1 = x509_parser::parse_x509_certificate(&certified.cert[0])
        .is_ok_and(|(_, c)| c.version() == x509_parser::x509::X509Version::V1);
    if !v1 {
        certified
            .keys_match()
            .map_err(|e| format!("{what}: the key does not fit the certificate ({e})"))?;
    }
    Ok(Served::Fixed(Arc::new(certified)))
}

fn client_ca(
    tls: &ServerTls,
    material: &Material<'_>,
    used: &mut Vec<SecretInUse>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, String> {
    let (secrets, store) = (material.secrets, material.store);
    let mandatory = match tls.mode {
        TerminationMode::Simple => return Ok(None),
        TerminationMode::Mutual | TerminationMode::IstioMutual => true,
        TerminationMode::OptionalMutual => false,
    };
    let source = tls.client_ca.as_ref().ok_or_else(|| {
        "MUTUAL TLS requires a client CA bundle (caCertificates, or ca.crt in the credential)"
            .to_string()
    })?;
    let pem = match source {
        CaBundleSource::MeshRoots => {
            return Ok(Some(Arc::new(MeshClientVerifier::new(
                store.clone(),
                mandatory,
            ))))
        }
        CaBundleSource::File { path } => read(path, material.volumes),
        CaBundleSource::Secret { name } => secret(secrets, name)
            .and_then(|s| s.ca_cert.clone().ok_or_else(|| format!("{name}: no CA")))
            .map(String::into_bytes),
    };
    let name = source.resource_name();
    let pem = match pem {
        Ok(p) => p,
        Err(e) => {
            note(used, name, true, &Err(e.clone()));
            return Err(e);
        }
    };
    note(used, name.clone(), true, &certs_of(&pem, &name));
    let verifier = ExternalClientVerifier::from_pem(&pem, mandatory, tls.subject_alt_names.clone())
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Some(Arc::new(verifier)))
}

/// OpenSSL's names for the TLS 1.2 suites rustls offers (Istio's `cipherSuites` spelling).
fn openssl_name(suite: rustls::CipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as C;
    Some(match suite {
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}
