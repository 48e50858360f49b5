//! The certificate authority: its key and certificates in a directory, and issuance of
//! workload certificates that carry only the identity the caller was authenticated as.
//!
//! Files (Istio's plug-in CA layout, so an operator can bring their own):
//! `root-cert.pem` (trust bundle), `ca-cert.pem` (the signing certificate), `ca-key.pem`
//! (its key, mode 0600) and `cert-chain.pem` (the signing certificate up to the root).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use time::OffsetDateTime;

use crate::spiffe::SpiffeId;

pub const ROOT_CERT: &str = "root-cert.pem";
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Istio's defaults: 24 h workload certificates, at most 90 days, backdated 2 minutes for
/// clock skew; a self-signed root lives 10 years.
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("the CSR could not be read: {0}")]
    BadCsr(String),
    #[error("cannot sign: {0}")]
    Signing(String),
    #[error("{dir} holds no CA (missing {missing}); run `tessera ca init` first")]
    NotInitialized { dir: PathBuf, missing: &'static str },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The key algorithm of an issued certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    Rsa2048,
}

impl KeyAlgorithm {
    pub fn generate(self) -> Result<KeyPair, CaError> {
        let result = match self {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        };
        result.map_err(|e| CaError::Signing(format!("key generation failed: {e}")))
    }
}

/// A signed workload certificate: the leaf and the intermediates above it (leaf first).
#[derive(Debug, Clone)]
pub struct IssuedChain {
    pub leaf_pem: String,
    pub intermediates_pem: Vec<String>,
    pub not_after: OffsetDateTime,
}

impl IssuedChain {
    /// Leaf then intermediates, as `cert-chain.pem` holds them.
    pub fn chain_pem(&self) -> String {
        let mut out = self.leaf_pem.clone();
        for c in &self.intermediates_pem {
            out.push_str(c);
        }
        out
    }
}

pub struct Authority {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    signing_cert_pem: String,
    root_pem: String,
    intermediates_pem: Vec<String>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The parameters of a self-signed root CA named `dn` (its validity is the caller's).
pub(crate) fn ca_params(dn: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The parameters of a TLS server's certificate named `common_name`, for DNS `names` and IP
/// `addresses` (its validity and serial are the caller's).
pub(crate) fn serving_params(
    common_name: &str,
    names: &[&str],
    addresses: &[std::net::IpAddr],
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let mut sans = Vec::new();
    for n in names {
        let name = (*n)
            .try_into()
            .map_err(|e| CaError::Signing(format!("{n:?} is not a DNS name: {e:?}")))?;
        sans.push(SanType::DnsName(name));
    }
    sans.extend(addresses.iter().map(|a| SanType::IpAddress(*a)));
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

impl Authority {
    /// Loads the CA in `dir`, or creates a self-signed root there when there is none.
    /// Returns whether it was created.
    pub fn init(dir: &Path) -> Result<(Authority, bool), CaError> {
        if dir.join(CA_KEY).exists() {
            return Ok((Authority::load(dir)?, false));
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let serial = random_serial()?;
        // A name of its own per root, so that a chain from another mesh's root reads as
        // "unknown CA" rather than as a bad signature under a look-alike name.
        let tag: String = serial.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Tessera");
        dn.push(DnType::CommonName, format!("Tessera mesh root CA {tag}"));
        let mut params = ca_params(dn);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + ROOT_TTL;
        params.serial_number = Some(serial);
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let pem = cert.pem();
        // The key goes last: its presence marks a complete CA.
        write_atomic(&dir.join(ROOT_CERT), pem.as_bytes(), 0o644)?;
        write_atomic(&dir.join(CA_CERT), pem.as_bytes(), 0o644)?;
        write_atomic(&dir.join(CERT_CHAIN), pem.as_bytes(), 0o644)?;
        write_atomic(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        Ok((Authority::load(dir)?, true))
    }

    /// Installs a user-supplied CA (Istio's `cacerts` layout: `ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, `cert-chain.pem`, e.g. an intermediate made with openssl) into `dir`.
    /// The files are checked first: the key must belong to `ca-cert.pem`, which must be a CA
    /// whose chain leads to `root-cert.pem`. An existing, different CA in `dir` is not
    /// replaced. Returns whether it was installed (false: the same CA was already there).
    pub fn init_plugin(dir: &Path, plugin_dir: &Path) -> Result<(Authority, bool), CaError> {
        let read = |name: &'static str| -> Result<String, CaError> {
            let path = plugin_dir.join(name);
            fs::read_to_string(&path).map_err(io(&path))
        };
        let files = [
            (ROOT_CERT, read(ROOT_CERT)?, 0o644),
            (CA_CERT, read(CA_CERT)?, 0o644),
            (CERT_CHAIN, read(CERT_CHAIN)?, 0o644),
            (CA_KEY, read(CA_KEY)?, 0o600),
        ];
        // Check everything in a scratch copy before touching `dir`.
        let scratch = std::env::temp_dir().join(format!(
            "tessera-ca-plugin-{}-{}",
            std::process::id(),
            random_serial()?
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        fs::create_dir_all(&scratch).map_err(io(&scratch))?;
        let checked = (|| {
            for (name, data, mode) in &files {
                write_atomic(&scratch.join(name), data.as_bytes(), *mode)?;
            }
            let candidate = Authority::load(&scratch).map_err(|e| match e {
                CaError::BadFile { path, reason } => CaError::BadFile {
                    path: plugin_dir.join(path.file_name().unwrap_or_default()),
                    reason,
                },
                other => other,
            })?;
            candidate.check_plugin(plugin_dir)
        })();
        let _ = fs::remove_dir_all(&scratch);
        checked?;
        if dir.join(CA_KEY).exists() {
            let existing = Authority::load(dir)?;
            if normalize(existing.root_bundle()) == normalize(&files[0].1)
                && normalize(existing.signing_cert_pem()) == normalize(&files[1].1)
            {
                return Ok((existing, false));
            }
            return Err(CaError::BadFile {
                path: dir.to_path_buf(),
                reason: "already holds a different CA; remove it first (workloads trust its root)"
                    .into(),
            });
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        for (name, data, mode) in &files {
            write_atomic(&dir.join(name), data.as_bytes(), *mode)?;
        }
        Ok((Authority::load(dir)?, true))
    }

    /// A plug-in CA is usable when it can sign and what it signs verifies against its roots.
    fn check_plugin(&self, plugin_dir: &Path) -> Result<(), CaError> {
        let bad = |name: &str, reason: String| CaError::BadFile {
            path: plugin_dir.join(name),
            reason,
        };
        let signing = split_pem(&self.signing_cert_pem);
        let Some(der) = signing
            .first()
            .and_then(|p| CertificateDer::pem_slice_iter(p.as_bytes()).next())
            .and_then(Result::ok)
        else {
            return Err(bad(CA_CERT, "holds no certificate".into()));
        };
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| bad(CA_CERT, e.to_string()))?;
        if !cert.is_ca() {
            return Err(bad(
                CA_CERT,
                "is not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
            ));
        }
        if cert.public_key().raw
            != rcgen::PublicKeyData::subject_public_key_info(self.issuer.key()).as_slice()
        {
            return Err(bad(CA_KEY, format!("is not the key of {CA_CERT}")));
        }
        let probe = SpiffeId::new("plugin.check", "default", "default")
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let (_, chain) = self.issue(
            &probe,
            Some(Duration::from_secs(300)),
            KeyAlgorithm::EcdsaP256,
        )?;
        let bundle = crate::verify::TrustBundle::from_pem(&self.root_pem, "plugin.check")
            .map_err(|e| bad(ROOT_CERT, e.to_string()))?;
        let ders: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain.chain_pem().as_bytes())
                .filter_map(Result::ok)
                .collect();
        bundle
            .verify(
                &ders,
                crate::verify::PeerRole::Client,
                None,
                rustls_pki_types::UnixTime::now(),
            )
            .map_err(|e| {
                bad(
                    CERT_CHAIN,
                    format!("certificates signed by {CA_CERT} do not verify against {ROOT_CERT} with this chain: {e}"),
                )
            })?;
        Ok(())
    }

    /// Loads the CA files of `dir`.
    pub fn load(dir: &Path) -> Result<Authority, CaError> {
        let read = |name: &'static str| -> Result<String, CaError> {
            let path = dir.join(name);
            if !path.exists() {
                return Err(CaError::NotInitialized {
                    dir: dir.to_path_buf(),
                    missing: name,
                });
            }
            fs::read_to_string(&path).map_err(io(&path))
        };
        let key_pem = read(CA_KEY)?;
        let signing_cert_pem = read(CA_CERT)?;
        let root_pem = read(ROOT_CERT)?;
        let chain_pem = read(CERT_CHAIN)?;
        let bad = |name: &str, reason: String| CaError::BadFile {
            path: dir.join(name),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            bad(
                CA_KEY,
                format!("not a usable private key ({e}); PKCS#8 PEM is expected: convert with `openssl pkcs8 -topk8 -nocrypt -in ca-key.pem -out ca-key.pk8.pem`"),
            )
        })?;
        let (not_before, not_after) = split_pem(&signing_cert_pem)
            .first()
            .and_then(|pem| cert_validity(pem))
            .ok_or_else(|| bad(CA_CERT, "holds no readable certificate".into()))?;
        let issuer = Issuer::from_ca_cert_pem(&signing_cert_pem, key)
            .map_err(|e| bad(CA_CERT, format!("not a usable CA certificate: {e}")))?;
        let roots = split_pem(&root_pem);
        if roots.is_empty() {
            return Err(bad(ROOT_CERT, "holds no certificate".into()));
        }
        // Intermediates: the chain file minus the signing certificate's own root(s).
        let intermediates_pem = split_pem(&chain_pem)
            .into_iter()
            .filter(|c| !roots.contains(c))
            .filter(|c| !is_self_signed(c))
            .collect::<Vec<_>>();
        let signing_is_root = roots.contains(&normalize(&signing_cert_pem));
        let intermediates_pem = if signing_is_root {
            Vec::new()
        } else if intermediates_pem.is_empty() {
            vec![normalize(&signing_cert_pem)]
        } else {
            intermediates_pem
        };
        Ok(Authority {
            dir: dir.to_path_buf(),
            issuer,
            signing_cert_pem,
            root_pem,
            intermediates_pem,
            not_before,
            not_after,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trust bundle (one or more roots, PEM).
    pub fn root_bundle(&self) -> &str {
        &self.root_pem
    }

    pub fn signing_cert_pem(&self) -> &str {
        &self.signing_cert_pem
    }

    /// Signs a certificate for `identity` over the public key of `csr_pem`. Whatever names
    /// the CSR asks for are ignored: the certificate carries only the authenticated identity.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<IssuedChain, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        self.sign(&csr.public_key, identity, ttl)
    }

    /// Issues a key and a certificate for `identity` (for VMs, static configs, benchmarks:
    /// the key is made here). Returns the key PEM and the chain.
    pub fn issue(
        &self,
        identity: &SpiffeId,
        ttl: Option<Duration>,
        algorithm: KeyAlgorithm,
    ) -> Result<(String, IssuedChain), CaError> {
        let key = algorithm.generate()?;
        let chain = self.sign(&key, identity, ttl)?;
        Ok((key.serialize_pem(), chain))
    }

    /// A serving certificate for the control plane's own servers (istiod's: the admission
    /// webhooks, which the API server verifies with the mesh root as `caBundle`), for DNS
    /// `names` and `addresses`: the key (PEM) and the chain.
    pub fn serving_certificate(
        &self,
        names: &[&str],
        addresses: &[std::net::IpAddr],
    ) -> Result<(String, IssuedChain), CaError> {
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let now = OffsetDateTime::now_utc();
        let common_name = names.first().copied().unwrap_or("istiod");
        let mut params = serving_params(common_name, names, addresses)?;
        params.not_before = (now - CLOCK_SKEW).max(self.not_before);
        params.not_after = (now + SERVING_TTL).min(self.not_after);
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let chain = IssuedChain {
            leaf_pem: cert.pem(),
            intermediates_pem: self.intermediates_pem.clone(),
            not_after: params.not_after,
        };
        Ok((key.serialize_pem(), chain))
    }

    fn sign(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        identity: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<IssuedChain, CaError> {
        let ttl = match ttl {
            Some(t) if !t.is_zero() => t.min(MAX_WORKLOAD_TTL),
            _ => DEFAULT_WORKLOAD_TTL,
        };
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        // Empty subject: the SAN extension then becomes critical, as for Istio's certs.
        params.distinguished_name = DistinguishedName::new();
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|e| CaError::Signing(format!("identity is not a valid URI: {e:?}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // A leaf's validity stays inside its signer's.
        params.not_before = (now - CLOCK_SKEW).max(self.not_before);
        params.not_after = (now + ttl).min(self.not_after);
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok(IssuedChain {
            leaf_pem: cert.pem(),
            intermediates_pem: self.intermediates_pem.clone(),
            not_after: params.not_after,
        })
    }
}

/// How long a serving certificate of the control plane is valid (made anew at each start).
const SERVING_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A random positive serial below 2^128 (RFC 5280: at most 20 octets, non-negative).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Signing("no secure random source".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never zero, never shortened to fewer octets
    Ok(SerialNumber::from_slice(&bytes))
}

/// Writes a file so that readers see the old or the new content, never a part: a
/// temporary file in the same directory, flushed, then renamed over the target.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // The mode given at creation is filtered by the umask; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// The PEM blocks of a bundle, each normalized to end with a newline.
pub fn split_pem(bundle: &str) -> Vec<String> {
    CertificateDer::pem_slice_iter(bundle.as_bytes())
        .filter_map(Result::ok)
        .map(|der| to_pem(&der))
        .collect()
}

fn normalize(pem: &str) -> String {
    split_pem(pem).into_iter().next().unwrap_or_default()
}

pub fn to_pem(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
}

fn cert_validity(pem: &str) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((
        cert.validity().not_before.to_datetime(),
        cert.validity().not_after.to_datetime(),
    ))
}

pub(crate) fn is_self_signed(pem: &str) -> bool {
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(pem.as_bytes()).next() else {
        return false;
    };
    x509_parser::parse_x509_certificate(&der)
        .map(|(_, c)| c.subject() == c.issuer())
        .unwrap_or(false)
}
