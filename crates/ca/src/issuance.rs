//! Deciding a certificate request: who is asking (the bootstrap token), what they may get
//! (exactly that identity), and the chain to send back. No I/O here; `service` puts it on
//! gRPC.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateSigningRequestParams, SanType};

use crate::authority::{split_pem, Authority, CaError};
use crate::spiffe::SpiffeId;
use crate::token::{TokenError, TokenKey};

/// A refused certificate request, with the reason the requester (and the CA's log) sees.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("not authenticated: {0}")]
    Token(#[from] TokenError),
    #[error("the token names an invalid identity: {0}")]
    TokenIdentity(String),
    #[error("the CSR could not be read: {0}")]
    BadCsr(String),
    #[error("the CSR asks for {asked} but the token authenticates {authenticated}; the CA signs only the authenticated identity")]
    OtherIdentity {
        asked: String,
        authenticated: String,
    },
    #[error(
        "validity_duration must be 0 (the CA's default) or a positive number of seconds, not {0}"
    )]
    BadValidity(i64),
    #[error("the CA could not sign: {0}")]
    Signing(#[from] CaError),
}

/// What the CA needs to decide requests: its signer, the token key and the trust domain.
#[derive(Debug)]
pub struct Issuer {
    pub authority: Authority,
    pub tokens: TokenKey,
    pub trust_domain: String,
    /// The lifetime of a certificate whose request names none (`None`: the authority's
    /// default, 24 h); install option `values.global.workloadCertTtl`.
    pub default_ttl: Option<Duration>,
}

/// A granted request: the identity signed and the chain, leaf first and root(s) last.
#[derive(Debug, Clone)]
pub struct Granted {
    pub identity: SpiffeId,
    pub cert_chain: Vec<String>,
}

impl Issuer {
    /// Decides one request made with `token` for `csr_pem`, valid `validity_secs` (0: the
    /// default lifetime).
    pub fn decide(
        &self,
        token: &str,
        csr_pem: &str,
        validity_secs: i64,
        now: SystemTime,
    ) -> Result<Granted, Refusal> {
        let claims = self.tokens.verify(token, now)?;
        let identity = SpiffeId::new(&self.trust_domain, &claims.ns, &claims.sa)
            .map_err(|e| Refusal::TokenIdentity(e.to_string()))?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Refusal::BadCsr(csr_reason(csr_pem, &e)))?;
        // A CSR may leave its names empty; if it names anything, it must be exactly the
        // authenticated identity (Istio refuses a mismatch the same way).
        let wanted = identity.to_string();
        for san in &csr.params.subject_alt_names {
            let asked = match san {
                SanType::URI(uri) if uri.as_str() == wanted => continue,
                SanType::URI(uri) => uri.as_str().to_string(),
                SanType::DnsName(name) => format!("DNS name {}", name.as_str()),
                SanType::IpAddress(ip) => format!("IP address {ip}"),
                SanType::Rfc822Name(mail) => format!("email {}", mail.as_str()),
                other => format!("{other:?}"),
            };
            return Err(Refusal::OtherIdentity {
                asked,
                authenticated: wanted,
            });
        }
        let ttl = match validity_secs {
            0 => self.default_ttl,
            s if s > 0 => Some(Duration::from_secs(s as u64)),
            s => return Err(Refusal::BadValidity(s)),
        };
        let chain = self.authority.sign_csr(csr_pem, &identity, ttl)?;
        let mut cert_chain = vec![chain.leaf_pem];
        cert_chain.extend(chain.intermediates_pem);
        cert_chain.extend(split_pem(self.authority.root_bundle()));
        Ok(Granted {
            identity,
            cert_chain,
        })
    }
}

fn csr_reason(csr_pem: &str, e: &rcgen::Error) -> String {
    if !csr_pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        "it is not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)".into()
    } else {
        format!("{e} (a CSR must be well formed and signed by the key it carries)")
    }
}
