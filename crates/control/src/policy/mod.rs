//! mTLS policy model: effective PeerAuthentication mode, the legacy
//! `authentication.istio.io/v1alpha1` mapping, Service port protocol
//! classification, and the install-time knobs that feed them.
//!
//! Everything here is pure and deterministic: no I/O, sorted outputs.

pub mod legacy;
pub mod mtls;
pub mod protocol;

use std::fmt;

pub use legacy::{
    effective_mode_with_legacy, to_peer_authn, validate_legacy, LegacyMtlsMode, LegacyPeers,
    LegacyPolicy, LegacyPortSelector, LegacyTarget, ServiceInfo, ServicePortInfo, TargetPort,
};
pub use mtls::{
    effective_mode, ignored, namespace_mode, Decision, EffectiveMode, Level, MtlsMode, PeerAuthn,
    PolicyKind, PolicyRef, Workload,
};
pub use protocol::{classify, ListenerClass, Protocol};

const K_MTLS_AUTO: &str = "values.global.mtls.auto";
const K_MTLS_ENABLED: &str = "values.global.mtls.enabled";
const K_ENABLE_AUTO_MTLS: &str = "meshConfig.enableAutoMtls";
const K_TRUST_DOMAIN: &str = "meshConfig.trustDomain";
const K_ROOT_NAMESPACE: &str = "meshConfig.rootNamespace";
const K_TLS_SIDECAR_INGRESS: &str = "values.pilot.env.ENABLE_TLS_ON_SIDECAR_INGRESS";
const K_WORKLOAD_CERT_TTL: &str = "values.global.workloadCertTtl";
const K_SECRET_TTL: &str = "meshConfig.defaultConfig.proxyMetadata.SECRET_TTL";
const K_PROFILE: &str = "profile";
const K_INGRESS_GATEWAY: &str = "values.gateways.istio-ingressgateway.enabled";
/// Istio ≤1.5: mTLS between control-plane components. Accepted and without effect here:
/// the control plane's sockets are local and every proxy authenticates with a token.
const K_CONTROL_PLANE_SECURITY: &str = "values.global.controlPlaneSecurityEnabled";

/// Install option keys [`MeshOptions::set`] accepts, in Istio's spelling.
pub const ACCEPTED_KEYS: &[&str] = &[
    K_MTLS_AUTO,
    K_MTLS_ENABLED,
    K_ENABLE_AUTO_MTLS,
    K_TRUST_DOMAIN,
    K_ROOT_NAMESPACE,
    K_TLS_SIDECAR_INGRESS,
    K_WORKLOAD_CERT_TTL,
    K_SECRET_TTL,
    K_PROFILE,
    K_CONTROL_PLANE_SECURITY,
    K_INGRESS_GATEWAY,
];

/// Profiles accepted for compatibility with `istioctl --set profile=...`; `minimal`
/// leaves the ingress gateway out, the others change nothing modelled here.
const PROFILES: &[&str] = &["default", "demo", "minimal"];

const EXPECT_BOOL: &str = "true or false";
const EXPECT_DURATION: &str = "a duration greater than zero such as 24h, 90m, 30s, 1h30m, \
                               or a number of seconds such as 3600";
const EXPECT_TRUST_DOMAIN: &str = "a non-empty DNS-like name made of lowercase letters, digits, \
                                   '-' and '.' (labels of 1-63 characters, not starting or \
                                   ending with '-'), e.g. cluster.local";
const EXPECT_NAMESPACE: &str = "a Kubernetes namespace name: 1-63 lowercase letters, digits or \
                                '-', starting and ending with a letter or digit";
const EXPECT_PROFILE: &str = "one of default, demo, minimal";

/// Install-time, mesh-wide knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshOptions {
    /// `values.global.mtls.auto` / `meshConfig.enableAutoMtls`.
    pub auto_mtls: bool,
    /// `values.global.mtls.enabled`: the ≤1.5 installer then created a STRICT
    /// MeshPolicy; modelled as the default peer mode.
    pub mtls_enabled: bool,
    pub trust_domain: String,
    pub root_namespace: String,
    /// istiod env `ENABLE_TLS_ON_SIDECAR_INGRESS`: Sidecar ingress listeners may terminate TLS.
    pub enable_tls_on_sidecar_ingress: bool,
    pub workload_cert_ttl_secs: u64,
    /// Deploy `istio-ingressgateway` in the root namespace (off with profile=minimal).
    pub ingress_gateway: bool,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            auto_mtls: true,
            mtls_enabled: false,
            trust_domain: "cluster.local".to_string(),
            root_namespace: "istio-system".to_string(),
            enable_tls_on_sidecar_ingress: false,
            workload_cert_ttl_secs: 86_400,
            ingress_gateway: true,
        }
    }
}

/// Why an install option was rejected. The `Display` text tells the operator
/// what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// The argument had no `=`.
    MissingEquals { arg: String },
    /// The key is not one of [`ACCEPTED_KEYS`].
    UnknownKey {
        key: String,
        /// Closest accepted key, when within edit distance 3.
        suggestion: Option<&'static str>,
    },
    /// The key is known but the value is not allowed.
    BadValue {
        key: String,
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingEquals { arg } => write!(
                f,
                "install option {arg:?} has no '=': expected KEY=VALUE, \
                 e.g. {K_MTLS_ENABLED}=true"
            ),
            Self::UnknownKey { key, suggestion } => {
                write!(f, "unknown install option {key:?}")?;
                if let Some(s) = suggestion {
                    write!(f, "; did you mean {s:?}?")?;
                }
                write!(f, " (accepted keys: {})", ACCEPTED_KEYS.join(", "))
            }
            Self::BadValue {
                key,
                value,
                expected,
            } => write!(f, "invalid value {value:?} for {key}: expected {expected}"),
        }
    }
}

impl std::error::Error for SetError {}

impl MeshOptions {
    /// Mode a workload gets when no PeerAuthentication decides: STRICT when
    /// `global.mtls.enabled` (the installer's STRICT MeshPolicy), else PERMISSIVE.
    pub fn default_peer_mode(&self) -> MtlsMode {
        if self.mtls_enabled {
            MtlsMode::Strict
        } else {
            MtlsMode::Permissive
        }
    }

    /// Applies one install option. Key and value are trimmed of surrounding
    /// whitespace; keys are case-sensitive, as in Istio.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SetError> {
        let key = key.trim();
        let value = value.trim();
        let bad = |expected| SetError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        match key {
            K_MTLS_AUTO | K_ENABLE_AUTO_MTLS => {
                self.auto_mtls = parse_bool(value).ok_or_else(|| bad(EXPECT_BOOL))?;
            }
            K_MTLS_ENABLED => {
                self.mtls_enabled = parse_bool(value).ok_or_else(|| bad(EXPECT_BOOL))?;
            }
            K_TLS_SIDECAR_INGRESS => {
                self.enable_tls_on_sidecar_ingress =
                    parse_bool(value).ok_or_else(|| bad(EXPECT_BOOL))?;
            }
            K_TRUST_DOMAIN => {
                if !is_valid_trust_domain(value) {
                    return Err(bad(EXPECT_TRUST_DOMAIN));
                }
                self.trust_domain = value.to_string();
            }
            K_ROOT_NAMESPACE => {
                if tessera_model::meta::validate_dns_label(value).is_err() {
                    return Err(bad(EXPECT_NAMESPACE));
                }
                self.root_namespace = value.to_string();
            }
            K_WORKLOAD_CERT_TTL | K_SECRET_TTL => {
                self.workload_cert_ttl_secs = parse_duration_secs(value)
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(EXPECT_DURATION))?;
            }
            K_PROFILE => {
                if !PROFILES.contains(&value) {
                    return Err(bad(EXPECT_PROFILE));
                }
                self.ingress_gateway = value != "minimal";
            }
            K_INGRESS_GATEWAY => {
                self.ingress_gateway = parse_bool(value).ok_or_else(|| bad(EXPECT_BOOL))?;
            }
            K_CONTROL_PLANE_SECURITY => {
                parse_bool(value).ok_or_else(|| bad(EXPECT_BOOL))?;
            }
            _ => {
                return Err(SetError::UnknownKey {
                    key: key.to_string(),
                    suggestion: suggest(key),
                })
            }
        }
        Ok(())
    }

    /// Builds options from `KEY=VALUE` strings (as given to `--set`; one may hold
    /// several pairs separated by commas, as istioctl and helm read them), applied in
    /// order on top of the defaults; the first error stops.
    pub fn from_sets<'a>(sets: impl IntoIterator<Item = &'a str>) -> Result<Self, SetError> {
        let mut opts = Self::default();
        for arg in sets.into_iter().flat_map(|a| a.split(',')) {
            let (key, value) = arg.split_once('=').ok_or_else(|| SetError::MissingEquals {
                arg: arg.to_string(),
            })?;
            opts.set(key, value)?;
        }
        Ok(opts)
    }

    /// [`mtls::effective_mode`] with this mesh's root namespace and default
    /// mode. When the default came from `global.mtls.enabled`, the `Default`
    /// decision names that option so operators can see where STRICT came from.
    pub fn effective_mode(
        &self,
        policies: &[PeerAuthn],
        w: &Workload,
        target_port: u32,
    ) -> EffectiveMode {
        self.name_default(mtls::effective_mode(
            policies,
            &self.root_namespace,
            self.default_peer_mode(),
            w,
            target_port,
        ))
    }

    /// [`legacy::effective_mode_with_legacy`] with this mesh's root namespace and default
    /// mode, the default named as in [`MeshOptions::effective_mode`].
    pub fn effective_mode_with_legacy(
        &self,
        beta: &[PeerAuthn],
        legacy_converted: &[PeerAuthn],
        w: &Workload,
        target_port: u32,
    ) -> EffectiveMode {
        self.name_default(legacy::effective_mode_with_legacy(
            beta,
            legacy_converted,
            &self.root_namespace,
            self.default_peer_mode(),
            w,
            target_port,
        ))
    }

    /// When the install default decided and it came from `global.mtls.enabled`, the
    /// decision names that option, so operators can see where STRICT came from.
    fn name_default(&self, mut m: EffectiveMode) -> EffectiveMode {
        if self.mtls_enabled {
            if let Some(d) = m
                .decided_by
                .last_mut()
                .filter(|d| d.level == Level::Default)
            {
                d.source = Some(PolicyRef::new(PolicyKind::MeshOption, "", K_MTLS_ENABLED));
            }
        }
        m
    }
}

/// Helm-style booleans, strictly: anything else is more likely a typo than intent.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A certificate lifetime: bare seconds (`3600`) or a duration (`24h`, `1h30m`), in whole
/// seconds. `None` on syntax errors and overflow.
fn parse_duration_secs(s: &str) -> Option<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    tessera_model::duration::parse(s).map(|d| d.as_secs())
}

/// Lowercase DNS-like name: dot-separated RFC 1123 labels, ≤253 characters.
fn is_valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.')
            .all(|l| tessera_model::meta::validate_dns_label(l).is_ok())
}

/// The closest accepted key, for a "did you mean" hint.
fn suggest(key: &str) -> Option<&'static str> {
    tessera_model::problem::closest(key, ACCEPTED_KEYS.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn with(f: impl FnOnce(&mut MeshOptions)) -> MeshOptions {
        let mut o = MeshOptions::default();
        f(&mut o);
        o
    }

    fn bad(key: &str, value: &str, expected: &'static str) -> SetError {
        SetError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        }
    }

    #[test]
    fn from_sets_table() {
        let rows: Vec<(&str, Vec<&str>, Result<MeshOptions, SetError>)> = vec![
            ("install option defaults", vec![], Ok(MeshOptions::default())),
            (
                "seed-002 install",
                vec![
                    "profile=demo",
                    "values.global.mtls.auto=true",
                    "values.global.mtls.enabled=false",
                ],
                Ok(MeshOptions::default()),
            ),
            (
                "install option mtls.enabled",
                vec!["values.global.mtls.enabled=true"],
                Ok(with(|o| o.mtls_enabled = true)),
            ),
            (
                "seed-001 install: pairs separated by commas; controlPlaneSecurityEnabled accepted",
                vec!["profile=demo,values.global.controlPlaneSecurityEnabled=true,values.global.mtls.enabled=true"],
                Ok(with(|o| o.mtls_enabled = true)),
            ),
            (
                "a comma-separated pair without '='",
                vec!["profile=demo,oops"],
                Err(SetError::MissingEquals { arg: "oops".into() }),
            ),
            (
                "install option mtls.auto off",
                vec!["values.global.mtls.auto=false"],
                Ok(with(|o| o.auto_mtls = false)),
            ),
            (
                "install option enableAutoMtls is mtls.auto; last wins",
                vec![
                    "values.global.mtls.auto=false",
                    "meshConfig.enableAutoMtls=true",
                ],
                Ok(MeshOptions::default()),
            ),
            (
                "install option trustDomain",
                vec!["meshConfig.trustDomain=example.org"],
                Ok(with(|o| o.trust_domain = "example.org".to_string())),
            ),
            (
                "install option rootNamespace",
                vec!["meshConfig.rootNamespace=istio-config"],
                Ok(with(|o| o.root_namespace = "istio-config".to_string())),
            ),
            (
                "install option ENABLE_TLS_ON_SIDECAR_INGRESS",
                vec!["values.pilot.env.ENABLE_TLS_ON_SIDECAR_INGRESS=true"],
                Ok(with(|o| o.enable_tls_on_sidecar_ingress = true)),
            ),
            (
                "TTL hours",
                vec!["values.global.workloadCertTtl=24h"],
                Ok(MeshOptions::default()),
            ),
            (
                "TTL minutes",
                vec!["values.global.workloadCertTtl=90m"],
                Ok(with(|o| o.workload_cert_ttl_secs = 5400)),
            ),
            (
                "TTL seconds",
                vec!["meshConfig.defaultConfig.proxyMetadata.SECRET_TTL=30s"],
                Ok(with(|o| o.workload_cert_ttl_secs = 30)),
            ),
            (
                "TTL bare seconds",
                vec!["meshConfig.defaultConfig.proxyMetadata.SECRET_TTL=3600"],
                Ok(with(|o| o.workload_cert_ttl_secs = 3600)),
            ),
            (
                "TTL compound",
                vec!["values.global.workloadCertTtl=1h30m"],
                Ok(with(|o| o.workload_cert_ttl_secs = 5400)),
            ),
            (
                "whitespace trimmed",
                vec![" values.global.mtls.enabled = true "],
                Ok(with(|o| o.mtls_enabled = true)),
            ),
            (
                "value may contain '='",
                vec!["meshConfig.trustDomain=a=b"],
                Err(bad(K_TRUST_DOMAIN, "a=b", EXPECT_TRUST_DOMAIN)),
            ),
            (
                "missing '='",
                vec!["values.global.mtls.enabled"],
                Err(SetError::MissingEquals {
                    arg: "values.global.mtls.enabled".to_string(),
                }),
            ),
            (
                "bool must be lowercase true/false",
                vec!["values.global.mtls.enabled=True"],
                Err(bad(K_MTLS_ENABLED, "True", EXPECT_BOOL)),
            ),
            (
                "bool rejects yes",
                vec!["meshConfig.enableAutoMtls=yes"],
                Err(bad(K_ENABLE_AUTO_MTLS, "yes", EXPECT_BOOL)),
            ),
            (
                "bool rejects empty",
                vec!["values.pilot.env.ENABLE_TLS_ON_SIDECAR_INGRESS="],
                Err(bad(K_TLS_SIDECAR_INGRESS, "", EXPECT_BOOL)),
            ),
            (
                "trust domain empty",
                vec!["meshConfig.trustDomain="],
                Err(bad(K_TRUST_DOMAIN, "", EXPECT_TRUST_DOMAIN)),
            ),
            (
                "trust domain uppercase",
                vec!["meshConfig.trustDomain=Cluster.Local"],
                Err(bad(K_TRUST_DOMAIN, "Cluster.Local", EXPECT_TRUST_DOMAIN)),
            ),
            (
                "trust domain empty label",
                vec!["meshConfig.trustDomain=cluster..local"],
                Err(bad(K_TRUST_DOMAIN, "cluster..local", EXPECT_TRUST_DOMAIN)),
            ),
            (
                "trust domain underscore",
                vec!["meshConfig.trustDomain=my_domain"],
                Err(bad(K_TRUST_DOMAIN, "my_domain", EXPECT_TRUST_DOMAIN)),
            ),
            (
                "root namespace with dot",
                vec!["meshConfig.rootNamespace=istio.system"],
                Err(bad(K_ROOT_NAMESPACE, "istio.system", EXPECT_NAMESPACE)),
            ),
            (
                "TTL zero",
                vec!["values.global.workloadCertTtl=0s"],
                Err(bad(K_WORKLOAD_CERT_TTL, "0s", EXPECT_DURATION)),
            ),
            (
                "TTL unknown unit",
                vec!["values.global.workloadCertTtl=1d"],
                Err(bad(K_WORKLOAD_CERT_TTL, "1d", EXPECT_DURATION)),
            ),
            (
                "TTL trailing digits",
                vec!["values.global.workloadCertTtl=1h30"],
                Err(bad(K_WORKLOAD_CERT_TTL, "1h30", EXPECT_DURATION)),
            ),
            (
                "TTL unit without number",
                vec!["values.global.workloadCertTtl=h"],
                Err(bad(K_WORKLOAD_CERT_TTL, "h", EXPECT_DURATION)),
            ),
            (
                "TTL overflow",
                vec!["values.global.workloadCertTtl=99999999999999999999h"],
                Err(bad(
                    K_WORKLOAD_CERT_TTL,
                    "99999999999999999999h",
                    EXPECT_DURATION,
                )),
            ),
            (
                "profile unknown",
                vec!["profile=ambient"],
                Err(bad(K_PROFILE, "ambient", EXPECT_PROFILE)),
            ),
            (
                "unknown key with suggestion",
                vec!["values.global.mtls.enable=true"],
                Err(SetError::UnknownKey {
                    key: "values.global.mtls.enable".to_string(),
                    suggestion: Some(K_MTLS_ENABLED),
                }),
            ),
            (
                "unknown key, case only",
                vec!["meshconfig.trustdomain=x"],
                Err(SetError::UnknownKey {
                    key: "meshconfig.trustdomain".to_string(),
                    suggestion: Some(K_TRUST_DOMAIN),
                }),
            ),
            (
                "unknown key far from all",
                vec!["values.gateways.enabled=true"],
                Err(SetError::UnknownKey {
                    key: "values.gateways.enabled".to_string(),
                    suggestion: None,
                }),
            ),
            (
                "first error stops",
                vec!["values.global.mtls.enabled=true", "nope=1", "profile=bad"],
                Err(SetError::UnknownKey {
                    key: "nope".to_string(),
                    suggestion: None,
                }),
            ),
        ];
        for (id, sets, want) in rows {
            assert_eq!(MeshOptions::from_sets(sets), want, "{id}");
        }
    }

    #[test]
    fn error_display_table() {
        let all = ACCEPTED_KEYS.join(", ");
        let rows: Vec<(&str, SetError, String)> = vec![
            (
                "missing '='",
                SetError::MissingEquals {
                    arg: "values.global.mtls.enabled".to_string(),
                },
                "install option \"values.global.mtls.enabled\" has no '=': expected KEY=VALUE, \
                 e.g. values.global.mtls.enabled=true"
                    .to_string(),
            ),
            (
                "unknown key with suggestion",
                SetError::UnknownKey {
                    key: "meshConfig.trustDomian".to_string(),
                    suggestion: Some(K_TRUST_DOMAIN),
                },
                format!(
                    "unknown install option \"meshConfig.trustDomian\"; did you mean \
                     \"meshConfig.trustDomain\"? (accepted keys: {all})"
                ),
            ),
            (
                "unknown key",
                SetError::UnknownKey {
                    key: "x".to_string(),
                    suggestion: None,
                },
                format!("unknown install option \"x\" (accepted keys: {all})"),
            ),
            (
                "bad value",
                bad(K_MTLS_AUTO, "on", EXPECT_BOOL),
                "invalid value \"on\" for values.global.mtls.auto: expected true or false"
                    .to_string(),
            ),
        ];
        for (id, err, want) in rows {
            assert_eq!(err.to_string(), want, "{id}");
        }
    }

    #[test]
    fn default_peer_mode_table() {
        let rows = [
            (
                "install option mtls.enabled=false",
                false,
                MtlsMode::Permissive,
            ),
            ("install option mtls.enabled=true", true, MtlsMode::Strict),
        ];
        for (id, enabled, want) in rows {
            let o = with(|o| o.mtls_enabled = enabled);
            assert_eq!(o.default_peer_mode(), want, "{id}");
        }
    }

    #[test]
    fn effective_mode_names_install_option() {
        let labels = BTreeMap::new();
        let w = Workload {
            namespace: "foo",
            labels: &labels,
        };
        let rows = [
            (
                "PA-01 install default",
                false,
                "PERMISSIVE [default PERMISSIVE]",
            ),
            (
                "PA-01 mtls.enabled",
                true,
                "STRICT [default STRICT (install option values.global.mtls.enabled)]",
            ),
        ];
        for (id, enabled, want) in rows {
            let o = with(|o| o.mtls_enabled = enabled);
            assert_eq!(o.effective_mode(&[], &w, 80).to_string(), want, "{id}");
        }
    }
}
