//! SPIFFE identities of workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";

/// A workload identity in Istio's SPIFFE form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("\"{0}\" is not a SPIFFE id: it must start with spiffe://")]
    Scheme(String),
    #[error("\"{0}\" is not a workload identity: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    Shape(String),
    #[error("invalid trust domain \"{0}\": use lowercase letters, digits, '-', '.' and '_'")]
    TrustDomain(String),
    #[error(
        "invalid {what} \"{value}\": it must be a lowercase RFC 1123 label (letters, digits, '-')"
    )]
    Segment { what: &'static str, value: String },
}

impl SpiffeId {
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeError> {
        check_trust_domain(trust_domain)?;
        check_segment("namespace", namespace)?;
        check_service_account(service_account)?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    /// Valid only with exactly the segments `ns` and `sa` in those positions.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeError::Scheme(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => SpiffeId::new(td, ns, sa),
            _ => Err(SpiffeError::Shape(s.to_string())),
        }
    }
}

fn check_trust_domain(td: &str) -> Result<(), SpiffeError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::TrustDomain(td.to_string()))
    }
}

fn check_segment(what: &'static str, v: &str) -> Result<(), SpiffeError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::Segment {
            what,
            value: v.to_string(),
        })
    }
}

/// Service account names are RFC 1123 subdomains (dots allowed).
fn check_service_account(v: &str) -> Result<(), SpiffeError> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.')
            .all(|label| check_segment("service account", label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::Segment {
            what: "service account",
            value: v.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_ids_round_trip() {
        // spiffe://<trust domain>/ns/<namespace>/sa/<service account>, both ways.
        for (td, ns, sa, text) in [
            (
                "cluster.local",
                "full",
                "sleep",
                "spiffe://cluster.local/ns/full/sa/sleep",
            ),
            (
                "cluster.local",
                "legacy",
                "default",
                "spiffe://cluster.local/ns/legacy/sa/default",
            ),
            (
                "example.org",
                "test",
                "httpbin",
                "spiffe://example.org/ns/test/sa/httpbin",
            ),
            (
                "cluster.local",
                "istio-system",
                "istio-ingressgateway-service-account",
                "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
            ),
        ] {
            let id = SpiffeId::new(td, ns, sa).unwrap();
            assert_eq!(id.to_string(), text);
            assert_eq!(text.parse::<SpiffeId>().unwrap(), id);
        }
    }

    #[test]
    fn only_the_ns_sa_shape_parses() {
        // Segments out of order, missing or extra are not workload identities.
        for bad in [
            "spiffe://cluster.local/sa/sleep/ns/full",
            "spiffe://cluster.local/ns/full",
            "spiffe://cluster.local/ns/full/sa/sleep/extra",
            "spiffe://cluster.local/ns//sa/sleep",
            "https://cluster.local/ns/full/sa/sleep",
            "spiffe://Cluster.Local/ns/full/sa/sleep",
            "spiffe:///ns/full/sa/sleep",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad}");
        }
        assert_eq!(
            "spiffe://cluster.local/ns/full".parse::<SpiffeId>().unwrap_err().to_string(),
            "\"spiffe://cluster.local/ns/full\" is not a workload identity: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
        );
    }
}
