//! TLS toward one endpoint, decided by the control plane and made ready here: mesh mTLS
//! with Istio's ALPN tokens and SPIFFE server verification, DestinationRule SIMPLE or
//! MUTUAL with the user's files, or plaintext. One rustls config per kind of traffic.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tessera_ca::{CredentialStore, SpiffeId};
use tessera_contract::config::{EndpointTls, TlsMode};

use crate::config::{invalid_config, ConfigError};
use crate::telemetry::TlsUsed;

/// What kind of bytes go over an upstream connection; chooses the ALPN offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    Http1,
    Http2,
    Tcp,
}

/// TLS toward one endpoint, ready to use.
#[derive(Debug, Clone)]
pub enum Origination {
    Plaintext,
    Tls {
        used: TlsUsed,
        server_name: ServerName<'static>,
        configs: Arc<ClientConfigs>,
    },
}

type MakeConfig = Box<dyn Fn(Flavor) -> Result<ClientConfig, rustls::Error> + Send + Sync>;

/// The rustls configs of one kind of TLS, one per [`Flavor`] (they differ in ALPN). Mesh
/// configs are made when first used: a proxy given thousands of identities makes configs
/// only for the ones it connects to, and endpoints that expect the same identities share
/// them.
pub struct ClientConfigs {
    make: MakeConfig,
    made: [std::sync::OnceLock<Arc<ClientConfig>>; 3],
}

impl std::fmt::Debug for ClientConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let made = self.made.iter().filter(|m| m.get().is_some()).count();
        write!(f, "ClientConfigs {{ {made} of 3 made }}")
    }
}

impl ClientConfigs {
    fn lazy(make: MakeConfig) -> ClientConfigs {
        ClientConfigs {
            make,
            made: Default::default(),
        }
    }

    fn ready(configs: [Arc<ClientConfig>; 3]) -> ClientConfigs {
        let made: [std::sync::OnceLock<Arc<ClientConfig>>; 3] = Default::default();
        for (slot, c) in made.iter().zip(configs) {
            let _ = slot.set(c);
        }
        ClientConfigs {
            make: Box::new(|_| Err(rustls::Error::General("made up front".into()))),
            made,
        }
    }

    /// The config for `flavor`.
    pub fn get(&self, flavor: Flavor) -> Result<Arc<ClientConfig>, rustls::Error> {
        let slot = &self.made[flavor as usize];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let made = Arc::new((self.make)(flavor)?);
        Ok(slot.get_or_init(|| made).clone())
    }
}

impl Origination {
    pub fn used(&self) -> TlsUsed {
        match self {
            Origination::Plaintext => TlsUsed::Plaintext,
            Origination::Tls { used, .. } => *used,
        }
    }
}

pub const ALPN_HTTP1: &[&[u8]] = &[b"istio-http/1.1", b"istio", b"http/1.1"];

pub const ALPN_HTTP2: &[&[u8]] = &[b"istio-h2", b"istio", b"h2"];

pub const ALPN_TCP: &[&[u8]] = &[b"istio-peer-exchange", b"istio"];

/// The server never selects `istio`: those tokens only tell mesh TLS from app TLS.
pub const ALPN_SERVER: &[&[u8]] = &[b"h2", b"http/1.1", b"istio-peer-exchange"];

pub(super) fn pool_key(addr: SocketAddr, tls: &EndpointTls) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    addr.hash(&mut h);
    tls.mode.hash(&mut h);
    tls.subject_alt_names.hash(&mut h);
    tls.sni.hash(&mut h);
    tls.ca_certificates.hash(&mut h);
    tls.client_certificate.hash(&mut h);
    tls.private_key.hash(&mut h);
    h.finish()
}

pub(super) fn origination(
    tls: &EndpointTls,
    host: &str,
    port: u16,
    store: &CredentialStore,
    mesh_configs: &mut HashMap<Vec<String>, Arc<ClientConfigs>>,
    path: &str,
) -> Result<Origination, ConfigError> {
    let sni = tls
        .sni
        .clone()
        .unwrap_or_else(|| format!("outbound_.{port}_._.{host}"));
    let server_name = ServerName::try_from(sni.clone())
        .or_else(|_| ServerName::try_from(host.to_string()))
        .map_err(|_| {
            invalid_config(
                format!("{path}.sni"),
                format!("{sni:?} is not a valid server name"),
            )
        })?;
    match tls.mode {
        TlsMode::Disable => Ok(Origination::Plaintext),
        TlsMode::IstioMutual => {
            let sans = tls.subject_alt_names.clone();
            if !mesh_configs.contains_key(&sans) {
                let expected = if sans.is_empty() {
                    None
                } else {
                    Some(
                        sans.iter()
                            .map(|s| {
                                s.parse::<SpiffeId>().map_err(|e| {
                                    invalid_config(format!("{path}.subjectAltNames"), e.to_string())
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                };
                let store = store.clone();
                let make: MakeConfig = Box::new(move |flavor| {
                    let alpn = match flavor {
                        Flavor::Http1 => ALPN_HTTP1,
                        Flavor::Http2 => ALPN_HTTP2,
                        Flavor::Tcp => ALPN_TCP,
                    };
                    tessera_ca::tls::client_config(&store, expected.clone(), alpn)
                });
                mesh_configs.insert(sans.clone(), Arc::new(ClientConfigs::lazy(make)));
            }
            Ok(Origination::Tls {
                used: TlsUsed::Mesh,
                server_name: server_name.to_owned(),
                configs: mesh_configs[&sans].clone(),
            })
        }
        TlsMode::Simple | TlsMode::Mutual => {
            let config = user_tls_config(tls, path)?;
            let with_alpn = |alpn: &[&[u8]]| {
                let mut c = config.clone();
                c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
                Arc::new(c)
            };
            Ok(Origination::Tls {
                used: if tls.mode == TlsMode::Simple {
                    TlsUsed::Simple
                } else {
                    TlsUsed::Mutual
                },
                server_name: ServerName::try_from(
                    tls.sni.clone().unwrap_or_else(|| host.to_string()),
                )
                .map_err(|_| invalid_config(format!("{path}.sni"), "not a valid server name"))?,
                configs: Arc::new(ClientConfigs::ready([
                    with_alpn(&[]),
                    with_alpn(&[b"h2"]),
                    with_alpn(&[]),
                ])),
            })
        }
    }
}

/// A rustls config for DestinationRule SIMPLE / MUTUAL.
pub fn user_tls_config(tls: &EndpointTls, path: &str) -> Result<ClientConfig, ConfigError> {
    let provider = tessera_ca::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid_config(path, e.to_string()))?;
    let builder = match &tls.ca_certificates {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca).map_err(|e| {
                invalid_config(
                    format!("{path}.caCertificates"),
                    format!("{}: {e:?}", ca.display()),
                )
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    invalid_config(
                        format!("{path}.caCertificates"),
                        format!("{}: {e:?}", ca.display()),
                    )
                })?;
                roots
                    .add(cert)
                    .map_err(|e| invalid_config(format!("{path}.caCertificates"), e.to_string()))?;
            }
            builder.with_root_certificates(roots)
        }
        // Istio's SIMPLE without caCertificates does not verify the server (analyze warns).
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification(
                tessera_ca::tls::algorithms(),
            ))),
    };
    let config = if tls.mode == TlsMode::Mutual {
        let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key) else {
            return Err(invalid_config(
                path,
                "MUTUAL needs clientCertificate and privateKey",
            ));
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                invalid_config(
                    format!("{path}.clientCertificate"),
                    format!("{}: {e:?}", cert.display()),
                )
            })?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            invalid_config(
                format!("{path}.privateKey"),
                format!("{}: {e:?}", key.display()),
            )
        })?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid_config(path, e.to_string()))?
    } else {
        builder.with_no_client_auth()
    };
    Ok(config)
}

/// Accepts any server certificate but still checks the handshake signatures against it.
#[derive(Debug)]
struct NoServerVerification(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}
