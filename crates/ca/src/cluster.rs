//! The Kubernetes API's own credentials, apart from the mesh CA (which signs workload
//! identities only): a cluster CA, the API server's serving certificate, an
//! administrator's client certificate and bearer token, as kubeadm writes them. The
//! kubeconfig that `kubectl` reads is made from them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use crate::authority::write_atomic;
use crate::CaError;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const ADMIN_CERT: &str = "admin.crt";
const ADMIN_KEY: &str = "admin.key";
const ADMIN_TOKEN: &str = "admin.token";

/// The user name and group of the administrator's credentials (kubeadm's `kubernetes-admin`
/// in `system:masters`).
pub const ADMIN_USER: &str = "tessera-admin";
pub const ADMIN_GROUP: &str = "system:masters";

const CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const LEAF_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The credentials of one cluster's API, loaded from or created in a directory.
pub struct ClusterCredentials {
    dir: PathBuf,
    pub ca_pem: String,
    ca_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    pub admin_token: String,
}

impl std::fmt::Debug for ClusterCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCredentials")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |e| CaError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn signing(e: rcgen::Error) -> CaError {
    CaError::Signing(e.to_string())
}

fn validity(params: &mut CertificateParams, ttl: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + ttl;
}

impl ClusterCredentials {
    /// Loads the credentials in `dir`, creating what is missing: the CA first, then the
    /// administrator's certificate and token.
    pub fn load_or_create(dir: &Path) -> Result<ClusterCredentials, CaError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if !dir.join(CA_KEY).exists() {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(signing)?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "tessera-cluster-ca");
            let mut params = crate::authority::ca_params(dn);
            validity(&mut params, CA_TTL);
            let cert = params.self_signed(&key).map_err(signing)?;
            write_atomic(&dir.join(CA_CERT), cert.pem().as_bytes(), 0o644)?;
            // The key last: its presence marks a complete CA.
            write_atomic(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(io(&path))
        };
        let ca_pem = read(CA_CERT)?;
        let ca_key_pem = read(CA_KEY)?;
        let mut creds = ClusterCredentials {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_key_pem,
            admin_cert_pem: String::new(),
            admin_key_pem: String::new(),
            admin_token: String::new(),
        };
        if !dir.join(ADMIN_KEY).exists() {
            let (cert, key) = creds.client_certificate(ADMIN_USER, &[ADMIN_GROUP])?;
            write_atomic(&dir.join(ADMIN_CERT), cert.as_bytes(), 0o600)?;
            write_atomic(&dir.join(ADMIN_KEY), key.as_bytes(), 0o600)?;
        }
        if !dir.join(ADMIN_TOKEN).exists() {
            write_atomic(&dir.join(ADMIN_TOKEN), random_token()?.as_bytes(), 0o600)?;
        }
        creds.admin_cert_pem = read(ADMIN_CERT)?;
        creds.admin_key_pem = read(ADMIN_KEY)?;
        creds.admin_token = read(ADMIN_TOKEN)?.trim().to_string();
        Ok(creds)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        let key = KeyPair::from_pem(&self.ca_key_pem).map_err(signing)?;
        Issuer::from_ca_cert_pem(&self.ca_pem, key).map_err(signing)
    }

    /// A client certificate for `user` in `groups` (subject CN and O, as Kubernetes reads
    /// them): the certificate and its key, PEM.
    pub fn client_certificate(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(signing)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        dn.push(DnType::CommonName, user);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, LEAF_TTL);
        let cert = params.signed_by(&key, &self.issuer()?).map_err(signing)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A serving certificate for the API server at `addresses` (and `localhost`), made
    /// anew at each start so that it names the address in use: certificate and key, PEM.
    pub fn serving_certificate(&self, addresses: &[IpAddr]) -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(signing)?;
        let mut params = crate::authority::serving_params(
            "tessera-apiserver",
            &["localhost", "kubernetes.default.svc"],
            addresses,
        )?;
        validity(&mut params, LEAF_TTL);
        let cert = params.signed_by(&key, &self.issuer()?).map_err(signing)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The kubeconfig for the administrator: one cluster at `server`, one user with the
    /// client certificate, one context (namespace `default`) that is current.
    pub fn kubeconfig(&self, server: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: tessera\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {ADMIN_USER}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: tessera\n  context:\n    cluster: tessera\n    user: {ADMIN_USER}\n    namespace: default\ncurrent-context: tessera\npreferences: {{}}\n",
            ca = b64(&self.ca_pem),
            cert = b64(&self.admin_cert_pem),
            key = b64(&self.admin_key_pem),
        )
    }
}

/// 32 random bytes, hex.
fn random_token() -> Result<String, CaError> {
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Signing("no secure random source".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Who a client certificate names: the subject's CN (user) and O values (groups).
pub fn certificate_subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_created_once_and_name_the_admin() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClusterCredentials::load_or_create(dir.path()).unwrap();
        let again = ClusterCredentials::load_or_create(dir.path()).unwrap();
        assert_eq!(first.ca_pem, again.ca_pem);
        assert_eq!(first.admin_cert_pem, again.admin_cert_pem);
        assert_eq!(first.admin_token, again.admin_token);
        assert_eq!(first.admin_token.len(), 64);
        let der = pem::parse(&first.admin_cert_pem).unwrap();
        let (user, groups) = certificate_subject(der.contents()).unwrap();
        assert_eq!(user, ADMIN_USER);
        assert_eq!(groups, vec![ADMIN_GROUP.to_string()]);
        let config = first.kubeconfig("https://127.0.0.1:6443");
        assert!(config.contains("server: https://127.0.0.1:6443"));
        assert!(config.contains("current-context: tessera"));
    }
}
