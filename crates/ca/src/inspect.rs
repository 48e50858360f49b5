//! Certificates as rows a person reads: kind, serial, validity, days left, SANs, subject and
//! issuer. Feeds `tessera x509 describe`, `proxy-config secret` and the admin `/certs`.

use std::fmt;

use ::time::OffsetDateTime;
use rustls_pki_types::{pem::PemObject, CertificateDer};
use x509_parser::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRow {
    /// "CA" for a certificate that may sign others, else "Cert Chain" (istioctl's words).
    pub kind: CertKind,
    /// Decimal, as istioctl prints serials.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Whole days until expiry at the time of inspection (negative once expired).
    pub days_left: i64,
    pub subject: String,
    pub issuer: String,
    /// `URI:...`, `DNS:...`, `IP:...`, in certificate order.
    pub sans: Vec<String>,
    /// Lowercase hex SHA-256 of the DER (XFCC's `Hash`).
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    Ca,
    Leaf,
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertKind::Ca => "CA",
            CertKind::Leaf => "Cert Chain",
        })
    }
}

impl CertRow {
    /// Valid now: inside its validity window.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("no PEM certificate found")]
    Empty,
    #[error("certificate {index} cannot be parsed: {reason}")]
    Parse { index: usize, reason: String },
}

/// Every certificate of a PEM bundle, in order.
pub fn describe_pem(pem: &str, now: OffsetDateTime) -> Result<Vec<CertRow>, InspectError> {
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .enumerate()
        .map(|(index, r)| {
            r.map_err(|e| InspectError::Parse {
                index,
                reason: format!("{e:?}"),
            })
        })
        .collect::<Result<_, _>>()?;
    if ders.is_empty() {
        return Err(InspectError::Empty);
    }
    ders.iter()
        .enumerate()
        .map(|(index, der)| {
            describe_der(der, now).map_err(|reason| InspectError::Parse { index, reason })
        })
        .collect()
}

pub fn describe_der(der: &[u8], now: OffsetDateTime) -> Result<CertRow, String> {
    use sha2::{Digest, Sha256};
    let (_, cert) = parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::URI(u) => format!("URI:{u}"),
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(ip) => format!("IP:{}", format_ip(ip)),
                GeneralName::RFC822Name(m) => format!("email:{m}"),
                other => format!("{other:?}"),
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertRow {
        kind: if cert.is_ca() {
            CertKind::Ca
        } else {
            CertKind::Leaf
        },
        serial: cert.tbs_certificate.serial.to_string(),
        not_before,
        not_after,
        days_left: (not_after - now).whole_days(),
        subject: rfc2253(cert.subject()),
        issuer: rfc2253(cert.issuer()),
        sans,
        sha256: Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// RFC 2253 order (last RDN first), as XFCC's `Subject` and openssl's `-nameopt RFC2253`.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let mut parts: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let key = oid_short_name(atv.attr_type());
                    let value = atv.as_str().unwrap_or("?");
                    format!("{key}={}", escape_rfc2253(value))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

fn oid_short_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "2.5.4.3" => "CN".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.11" => "OU".into(),
        "1.2.840.113549.1.9.1" => "emailAddress".into(),
        other => other.to_string(),
    }
}

fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == v.chars().count() - 1 && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn format_ip(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{bytes:?}"),
    }
}

/// `2023-02-14T09:51:56Z`, as istioctl prints validity.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(::time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authority, KeyAlgorithm, SpiffeId};

    #[test]
    fn rows_of_an_issued_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Authority::init(dir.path()).unwrap();
        let id = SpiffeId::new("cluster.local", "full", "sleep").unwrap();
        let (_k, chain) = ca.issue(&id, None, KeyAlgorithm::EcdsaP256).unwrap();
        let now = OffsetDateTime::now_utc();
        let bundle = format!("{}{}", chain.leaf_pem, ca.root_bundle());
        let rows = describe_pem(&bundle, now).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].kind, CertKind::Leaf);
        assert_eq!(
            rows[0].sans,
            ["URI:spiffe://cluster.local/ns/full/sa/sleep"]
        );
        assert_eq!(rows[0].subject, "");
        assert!(
            rows[0].issuer.starts_with("CN=Tessera mesh root CA ")
                && rows[0].issuer.ends_with(",O=Tessera"),
            "{}",
            rows[0].issuer
        );
        assert_eq!(rows[0].days_left, 0, "24 h from now is 0 whole days left");
        assert!(rows[0].is_valid_at(now));
        assert!(rows[0].serial.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(rows[0].sha256.len(), 64);
        assert_eq!(rows[1].kind, CertKind::Ca);
        assert!((3649..=3651).contains(&rows[1].days_left));
        assert_eq!(describe_pem("nothing here", now), Err(InspectError::Empty));
    }
}
