//! Server-side effective mTLS mode of a workload port, from `security.istio.io`
//! `PeerAuthentication` resources, plus the client-side namespace hint used by auto mTLS
//! (a namespace whose mode is DISABLE gets plaintext) and a report of policies that never
//! apply.

use std::collections::BTreeMap;
use std::fmt;

/// `spec.mtls.mode` of a PeerAuthentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MtlsMode {
    /// Inherit from the parent scope; also what a missing `mtls` block means.
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl MtlsMode {
    /// Parses the Istio enum name. Case-sensitive, like the protobuf JSON mapping
    /// Istio's CRDs use, so `strict` is rejected rather than silently accepted.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "UNSET" => Some(Self::Unset),
            "DISABLE" => Some(Self::Disable),
            "PERMISSIVE" => Some(Self::Permissive),
            "STRICT" => Some(Self::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "UNSET",
            Self::Disable => "DISABLE",
            Self::Permissive => "PERMISSIVE",
            Self::Strict => "STRICT",
        }
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of object a [`PolicyRef`] points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `authentication.istio.io/v1alpha1` Policy.
    LegacyPolicy,
    /// `authentication.istio.io/v1alpha1` MeshPolicy (cluster-scoped).
    LegacyMeshPolicy,
    /// An install option (`values.global.mtls.enabled`), not a stored resource.
    MeshOption,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PeerAuthentication => "PeerAuthentication",
            Self::LegacyPolicy => "Policy",
            Self::LegacyMeshPolicy => "MeshPolicy",
            Self::MeshOption => "install option",
        })
    }
}

/// Identifies the resource a decision came from, so operators can find it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyRef {
    pub kind: PolicyKind,
    /// Empty for cluster-scoped objects and install options.
    pub namespace: String,
    pub name: String,
}

impl PolicyRef {
    pub fn new(kind: PolicyKind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl From<tessera_model::istio::MtlsModeSpec> for MtlsMode {
    fn from(m: tessera_model::istio::MtlsModeSpec) -> Self {
        use tessera_model::istio::MtlsModeSpec as S;
        match m {
            S::Unset => MtlsMode::Unset,
            S::Disable => MtlsMode::Disable,
            S::Permissive => MtlsMode::Permissive,
            S::Strict => MtlsMode::Strict,
        }
    }
}

/// A PeerAuthentication reduced to what mode resolution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthn {
    pub source: PolicyRef,
    pub namespace: String,
    /// Ordering key for "oldest wins": smaller = older (creationTimestamp as unix
    /// seconds, then a store sequence); exact ties are broken by name, then namespace.
    pub created: (i64, u64),
    /// `None` or an empty map => mesh-level (root namespace) or namespace-level.
    pub selector: Option<BTreeMap<String, String>>,
    /// `Unset` when the `mtls` block is missing.
    pub mode: MtlsMode,
    /// `portLevelMtls`, keyed by the workload (target) port.
    pub port_level: BTreeMap<u32, MtlsMode>,
}

impl PeerAuthn {
    /// Reads a PeerAuthentication model; `created` is the "oldest wins" ordering key.
    pub fn from_model(
        pa: &tessera_model::istio::PeerAuthentication,
        created: (i64, u64),
    ) -> PeerAuthn {
        let namespace = pa.metadata.namespace.clone().unwrap_or_default();
        PeerAuthn {
            source: PolicyRef {
                kind: PolicyKind::PeerAuthentication,
                namespace: namespace.clone(),
                name: pa.metadata.name.clone(),
            },
            namespace,
            created,
            selector: pa.spec.selector.as_ref().map(|s| s.match_labels.clone()),
            mode: pa
                .spec
                .mtls
                .as_ref()
                .map_or(MtlsMode::Unset, |m| MtlsMode::from(m.mode)),
            port_level: pa
                .spec
                .port_level_mtls
                .iter()
                .flatten()
                .map(|(port, m)| (*port, MtlsMode::from(m.mode)))
                .collect(),
        }
    }

    /// True when the policy has no (or an empty) selector.
    pub fn is_selectorless(&self) -> bool {
        self.selector.as_ref().is_none_or(BTreeMap::is_empty)
    }

    fn order_key(&self) -> (i64, u64, &str, &str) {
        (
            self.created.0,
            self.created.1,
            self.source.name.as_str(),
            self.namespace.as_str(),
        )
    }
}

/// The workload whose inbound traffic is being decided.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// Scope a [`Decision`] was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// No policy decided: the install default.
    Default,
    Mesh,
    Namespace,
    Workload,
    Port,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::Mesh => "mesh",
            Self::Namespace => "namespace",
            Self::Workload => "workload",
            Self::Port => "port",
        })
    }
}

/// One link in the inheritance chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub level: Level,
    /// `None` for the built-in default.
    pub source: Option<PolicyRef>,
    /// The mode declared at this level (may be `Unset`, meaning "inherited").
    pub mode: MtlsMode,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(src) => write!(f, "{} {} ({})", self.level, self.mode, src),
            None => write!(f, "{} {}", self.level, self.mode),
        }
    }
}

/// Result of [`effective_mode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveMode {
    /// Never `Unset`.
    pub mode: MtlsMode,
    /// Inheritance chain, most specific level first. Every level that exists for
    /// the workload is listed down to (and including) the one that decided, which
    /// is always the last entry; levels below it were overridden and are omitted.
    /// Example: `[port UNSET, workload UNSET, namespace STRICT]`.
    pub decided_by: Vec<Decision>,
}

impl fmt::Display for EffectiveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [", self.mode)?;
        for (i, d) in self.decided_by.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The mesh, namespace and workload policies that apply to one workload.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Applicable<'p> {
    pub mesh: Option<&'p PeerAuthn>,
    pub namespace: Option<&'p PeerAuthn>,
    pub workload: Option<&'p PeerAuthn>,
}

impl Applicable<'_> {
    pub fn any(&self) -> bool {
        self.mesh.is_some() || self.namespace.is_some() || self.workload.is_some()
    }
}

/// True when every selector label is present on the workload with the same value.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn oldest<'p>(it: impl Iterator<Item = &'p PeerAuthn>) -> Option<&'p PeerAuthn> {
    it.min_by(|a, b| a.order_key().cmp(&b.order_key()))
}

fn oldest_selectorless<'p>(policies: &'p [PeerAuthn], namespace: &str) -> Option<&'p PeerAuthn> {
    oldest(
        policies
            .iter()
            .filter(|p| p.namespace == namespace && p.is_selectorless()),
    )
}

/// The mesh, namespace and workload policies that apply to `w`.
pub(crate) fn applicable<'p>(
    policies: &'p [PeerAuthn],
    root_namespace: &str,
    w: &Workload,
) -> Applicable<'p> {
    let mesh = oldest_selectorless(policies, root_namespace);
    // A workload in the root namespace has no separate namespace level.
    let namespace = if w.namespace != root_namespace {
        oldest_selectorless(policies, w.namespace)
    } else {
        None
    };
    // Selector policies in the root namespace never apply, even to workloads that
    // live there; Istio skips them when composing.
    let workload = if w.namespace != root_namespace {
        oldest(policies.iter().filter(|p| {
            p.namespace == w.namespace
                && p.selector
                    .as_ref()
                    .is_some_and(|s| !s.is_empty() && selects(s, w.labels))
        }))
    } else {
        None
    };
    Applicable {
        mesh,
        namespace,
        workload,
    }
}

/// Effective server-side mode for workload `w` receiving on `target_port`
/// (the container port the sidecar receives on, never the Service port).
///
/// Istio's composition: start from `default_mode` (PERMISSIVE normally, STRICT when
/// the install option `global.mtls.enabled=true`), overwrite with mesh, namespace
/// and workload modes that are not UNSET, then with the workload policy's
/// `portLevelMtls[target_port]` unless that is UNSET. A `default_mode` of `Unset`
/// is treated as PERMISSIVE so the result is never `Unset`.
pub fn effective_mode(
    policies: &[PeerAuthn],
    root_namespace: &str,
    default_mode: MtlsMode,
    w: &Workload,
    target_port: u32,
) -> EffectiveMode {
    let a = applicable(policies, root_namespace, w);
    let mut levels: Vec<Decision> = Vec::with_capacity(5);
    let decision = |level, p: &PeerAuthn, mode| Decision {
        level,
        source: Some(p.source.clone()),
        mode,
    };
    if let Some(wl) = a.workload {
        if let Some(&pm) = wl.port_level.get(&target_port) {
            levels.push(decision(Level::Port, wl, pm));
        }
        levels.push(decision(Level::Workload, wl, wl.mode));
    }
    if let Some(ns) = a.namespace {
        levels.push(decision(Level::Namespace, ns, ns.mode));
    }
    if let Some(mesh) = a.mesh {
        levels.push(decision(Level::Mesh, mesh, mesh.mode));
    }

    // Walking from the most specific level and stopping at the first non-UNSET
    // one is the same as Istio's top-down overwrite, and yields the chain.
    let mut decided_by = Vec::with_capacity(levels.len() + 1);
    for d in levels {
        let decided = d.mode != MtlsMode::Unset;
        decided_by.push(d);
        if decided {
            break;
        }
    }
    let mode = match decided_by.last() {
        Some(d) if d.mode != MtlsMode::Unset => d.mode,
        _ => {
            let mode = match default_mode {
                MtlsMode::Unset => MtlsMode::Permissive,
                m => m,
            };
            decided_by.push(Decision {
                level: Level::Default,
                source: None,
                mode,
            });
            mode
        }
    };
    EffectiveMode { mode, decided_by }
}

/// The client-side hint of auto mTLS: the namespace-level mode, else the
/// mesh-level mode, else `default_mode`. UNSET at a level falls through to the
/// next one. Workload and port levels are deliberately not consulted: they reach
/// clients through endpoint marking instead.
pub fn namespace_mode(
    policies: &[PeerAuthn],
    root_namespace: &str,
    default_mode: MtlsMode,
    namespace: &str,
) -> MtlsMode {
    let ns = if namespace != root_namespace {
        oldest_selectorless(policies, namespace)
    } else {
        None
    };
    let mesh = oldest_selectorless(policies, root_namespace);
    [ns, mesh]
        .into_iter()
        .flatten()
        .map(|p| p.mode)
        .find(|m| *m != MtlsMode::Unset)
        .unwrap_or(match default_mode {
            MtlsMode::Unset => MtlsMode::Permissive,
            m => m,
        })
}

/// Policies (or parts of them) that can never take effect, with a reason an
/// operator can act on. Sorted by policy, then reason.
///
/// Reported: selector policies in the root namespace; the younger of two
/// selector-less policies in a namespace; a selector policy that an older policy in the
/// same namespace always shadows because the older selector is a subset of its own;
/// `portLevelMtls` on a selector-less policy (only the port part is ignored).
pub fn ignored(policies: &[PeerAuthn], root_namespace: &str) -> Vec<(PolicyRef, String)> {
    let mut out = Vec::new();
    for p in policies {
        if p.is_selectorless() {
            let winner = oldest_selectorless(policies, &p.namespace);
            if let Some(w) = winner.filter(|w| !std::ptr::eq(*w, p)) {
                out.push((
                    p.source.clone(),
                    format!(
                        "namespace {ns} already has an older policy {ns}/{name}; only the oldest applies",
                        ns = p.namespace,
                        name = w.source.name
                    ),
                ));
            } else if !p.port_level.is_empty() {
                out.push((
                    p.source.clone(),
                    "portLevelMtls is ignored on a policy without a selector \
                     (mesh/namespace peer authentication cannot have port level mTLS)"
                        .to_string(),
                ));
            }
            continue;
        }
        if p.namespace == root_namespace {
            out.push((
                p.source.clone(),
                format!("selector policies in the root namespace {root_namespace} are ignored"),
            ));
            continue;
        }
        let sel = p.selector.as_ref().cloned().unwrap_or_default();
        let shadow = oldest(policies.iter().filter(|q| {
            !std::ptr::eq(*q, p)
                && q.namespace == p.namespace
                && q.order_key() < p.order_key()
                && q.selector
                    .as_ref()
                    .is_some_and(|qs| !qs.is_empty() && selects(qs, &sel))
        }));
        if let Some(q) = shadow {
            out.push((
                p.source.clone(),
                format!(
                    "older policy {}/{} selects every workload this policy selects; \
                     only the oldest matching policy applies",
                    q.namespace, q.source.name
                ),
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use MtlsMode::*;

    pub(crate) const ROOT: &str = "istio-system";

    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Selector-less PeerAuthentication created at `t` (unix seconds).
    pub(crate) fn pa(ns: &str, name: &str, t: i64) -> PeerAuthn {
        PeerAuthn {
            source: PolicyRef::new(PolicyKind::PeerAuthentication, ns, name),
            namespace: ns.to_string(),
            created: (t, 0),
            selector: None,
            mode: Unset,
            port_level: BTreeMap::new(),
        }
    }

    impl PeerAuthn {
        pub(crate) fn mode(mut self, m: MtlsMode) -> Self {
            self.mode = m;
            self
        }
        pub(crate) fn sel(mut self, s: &[(&str, &str)]) -> Self {
            self.selector = Some(labels(s));
            self
        }
        pub(crate) fn port(mut self, p: u32, m: MtlsMode) -> Self {
            self.port_level.insert(p, m);
            self
        }
        fn seq(mut self, s: u64) -> Self {
            self.created.1 = s;
            self
        }
    }

    struct Row {
        id: &'static str,
        policies: Vec<PeerAuthn>,
        ns: &'static str,
        labels: &'static [(&'static str, &'static str)],
        port: u32,
        default: MtlsMode,
        want: MtlsMode,
        /// Expected chain, most specific first, as (level, policy name or "").
        chain: &'static [(Level, &'static str)],
    }

    const HTTPBIN: &[(&str, &str)] = &[("app", "httpbin"), ("version", "v1")];
    const SLEEP: &[(&str, &str)] = &[("app", "sleep")];
    const GATEWAY: &[(&str, &str)] = &[("istio", "ingressgateway")];

    fn rows() -> Vec<Row> {
        vec![
            Row {
                id: "PA-01",
                policies: vec![],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Permissive,
                chain: &[(Level::Default, "")],
            },
            Row {
                id: "PA-02",
                policies: vec![pa(ROOT, "default", 1).mode(Strict)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Mesh, "default")],
            },
            Row {
                id: "PA-02 (other namespace)",
                policies: vec![pa(ROOT, "default", 1).mode(Strict)],
                ns: "legacy",
                labels: SLEEP,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Mesh, "default")],
            },
            Row {
                id: "PA-03",
                policies: vec![
                    pa(ROOT, "default", 1).mode(Strict),
                    pa("foo", "default", 2).mode(Permissive),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Permissive,
                chain: &[(Level::Namespace, "default")],
            },
            Row {
                id: "PA-04",
                policies: vec![pa(ROOT, "default", 1).mode(Strict), pa("foo", "default", 2)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Namespace, "default"), (Level::Mesh, "default")],
            },
            Row {
                id: "PA-05",
                policies: vec![pa(ROOT, "default", 1)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Permissive,
                chain: &[(Level::Mesh, "default"), (Level::Default, "")],
            },
            Row {
                id: "PA-05 (UNSET at mesh, mtls.enabled default)",
                policies: vec![pa(ROOT, "default", 1)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Strict,
                want: Strict,
                chain: &[(Level::Mesh, "default"), (Level::Default, "")],
            },
            Row {
                id: "PA-06",
                policies: vec![
                    pa("foo", "default", 1).mode(Strict),
                    pa("foo", "httpbin", 2)
                        .sel(&[("app", "httpbin")])
                        .mode(Disable),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Disable,
                chain: &[(Level::Workload, "httpbin")],
            },
            Row {
                id: "PA-06 (unselected workload keeps namespace)",
                policies: vec![
                    pa("foo", "default", 1).mode(Strict),
                    pa("foo", "httpbin", 2)
                        .sel(&[("app", "httpbin")])
                        .mode(Disable),
                ],
                ns: "foo",
                labels: SLEEP,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Namespace, "default")],
            },
            Row {
                id: "PA-07 (target port 80)",
                policies: vec![pa("foo", "httpbin", 1)
                    .sel(&[("app", "httpbin")])
                    .mode(Strict)
                    .port(80, Disable)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Disable,
                chain: &[(Level::Port, "httpbin")],
            },
            Row {
                id: "PA-07 (target port 9000)",
                policies: vec![pa("foo", "httpbin", 1)
                    .sel(&[("app", "httpbin")])
                    .mode(Strict)
                    .port(80, Disable)],
                ns: "foo",
                labels: HTTPBIN,
                port: 9000,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Workload, "httpbin")],
            },
            Row {
                id: "PA-08",
                policies: vec![pa("foo", "httpbin", 1)
                    .sel(&[("app", "httpbin")])
                    .mode(Strict)
                    .port(8000, Disable)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Workload, "httpbin")],
            },
            Row {
                id: "PA-09 (port 80)",
                policies: vec![pa("foo", "httpbin", 1)
                    .sel(&[("app", "httpbin")])
                    .port(80, Strict)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Port, "httpbin")],
            },
            Row {
                id: "PA-09 (other port inherits namespace)",
                policies: vec![
                    pa("foo", "default", 1).mode(Disable),
                    pa("foo", "httpbin", 2)
                        .sel(&[("app", "httpbin")])
                        .port(80, Strict),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 9000,
                default: Permissive,
                want: Disable,
                chain: &[(Level::Workload, "httpbin"), (Level::Namespace, "default")],
            },
            Row {
                id: "PA-09 (other port inherits default)",
                policies: vec![pa("foo", "httpbin", 1)
                    .sel(&[("app", "httpbin")])
                    .port(80, Strict)],
                ns: "foo",
                labels: HTTPBIN,
                port: 9000,
                default: Permissive,
                want: Permissive,
                chain: &[(Level::Workload, "httpbin"), (Level::Default, "")],
            },
            Row {
                id: "PA-10",
                policies: vec![
                    pa("foo", "default", 1).mode(Strict),
                    pa("foo", "httpbin", 2)
                        .sel(&[("app", "httpbin")])
                        .mode(Unset)
                        .port(80, Unset),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[
                    (Level::Port, "httpbin"),
                    (Level::Workload, "httpbin"),
                    (Level::Namespace, "default"),
                ],
            },
            Row {
                id: "PA-10 (UNSET port, workload set)",
                policies: vec![
                    pa("foo", "default", 1).mode(Strict),
                    pa("foo", "httpbin", 2)
                        .sel(&[("app", "httpbin")])
                        .mode(Disable)
                        .port(80, Unset),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Disable,
                chain: &[(Level::Port, "httpbin"), (Level::Workload, "httpbin")],
            },
            Row {
                id: "PA-11",
                policies: vec![
                    pa("foo", "newer", 200)
                        .sel(&[("app", "httpbin")])
                        .mode(Disable),
                    pa("foo", "older", 100)
                        .sel(&[("app", "httpbin")])
                        .mode(Strict),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Workload, "older")],
            },
            Row {
                id: "PA-11 (creation time beats name)",
                policies: vec![
                    pa("foo", "a-newer", 200)
                        .sel(&[("app", "httpbin")])
                        .mode(Disable),
                    pa("foo", "z-older", 100)
                        .sel(&[("version", "v1")])
                        .mode(Strict),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Workload, "z-older")],
            },
            Row {
                id: "PA-12",
                policies: vec![
                    pa(ROOT, "httpbin", 1)
                        .sel(&[("app", "httpbin")])
                        .mode(Disable),
                    pa(ROOT, "default", 2).mode(Strict),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Mesh, "default")],
            },
            Row {
                id: "PA-13",
                policies: vec![
                    pa(ROOT, "default", 1).mode(Strict),
                    pa(ROOT, "gw", 2)
                        .sel(&[("istio", "ingressgateway")])
                        .mode(Disable),
                ],
                ns: ROOT,
                labels: GATEWAY,
                port: 8443,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Mesh, "default")],
            },
            Row {
                id: "PA-13 (root UNSET has no namespace level)",
                policies: vec![pa(ROOT, "default", 1)],
                ns: ROOT,
                labels: GATEWAY,
                port: 8443,
                default: Permissive,
                want: Permissive,
                chain: &[(Level::Mesh, "default"), (Level::Default, "")],
            },
            Row {
                id: "PA-V5 (oldest selector-less wins by created)",
                policies: vec![
                    pa("foo", "aaa", 200).mode(Disable),
                    pa("foo", "zzz", 100).mode(Strict),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Namespace, "zzz")],
            },
            Row {
                id: "PA-V5 (same second, store sequence decides)",
                policies: vec![
                    pa("foo", "aaa", 100).seq(2).mode(Disable),
                    pa("foo", "zzz", 100).seq(1).mode(Strict),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Namespace, "zzz")],
            },
            Row {
                id: "PA-V5 (exact tie broken by name)",
                policies: vec![
                    pa("foo", "b", 100).mode(Strict),
                    pa("foo", "a", 100).mode(Disable),
                ],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Disable,
                chain: &[(Level::Namespace, "a")],
            },
            Row {
                id: "PA-V1 (portLevelMtls on mesh policy ignored)",
                policies: vec![pa(ROOT, "default", 1).mode(Strict).port(80, Disable)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Mesh, "default")],
            },
            Row {
                id: "PA-03 (empty selector map is namespace-level)",
                policies: vec![pa("foo", "default", 1).sel(&[]).mode(Strict)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
                chain: &[(Level::Namespace, "default")],
            },
            Row {
                id: "PA-06 (selector must be a subset of labels)",
                policies: vec![pa("foo", "httpbin", 1)
                    .sel(&[("app", "httpbin"), ("version", "v2")])
                    .mode(Strict)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Permissive,
                chain: &[(Level::Default, "")],
            },
            Row {
                id: "PA-06 (selector policy in another namespace)",
                policies: vec![pa("bar", "httpbin", 1)
                    .sel(&[("app", "httpbin")])
                    .mode(Strict)],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Permissive,
                chain: &[(Level::Default, "")],
            },
            Row {
                id: "PA-01 (mtls.enabled install default)",
                policies: vec![],
                ns: "foo",
                labels: HTTPBIN,
                port: 80,
                default: Strict,
                want: Strict,
                chain: &[(Level::Default, "")],
            },
        ]
    }

    #[test]
    fn effective_mode_table() {
        for row in rows() {
            let l = labels(row.labels);
            let w = Workload {
                namespace: row.ns,
                labels: &l,
            };
            let got = effective_mode(&row.policies, ROOT, row.default, &w, row.port);
            assert_eq!(got.mode, row.want, "{}: {}", row.id, got);
            let chain: Vec<(Level, &str)> = got
                .decided_by
                .iter()
                .map(|d| (d.level, d.source.as_ref().map_or("", |s| s.name.as_str())))
                .collect();
            assert_eq!(chain, row.chain, "{}: {}", row.id, got);
            assert_eq!(
                got.decided_by.last().map(|d| d.mode),
                Some(got.mode),
                "{}: last entry must decide",
                row.id
            );
        }
    }

    #[test]
    fn namespace_mode_table() {
        // (id, policies, namespace, default, want)
        let rows: Vec<(&str, Vec<PeerAuthn>, &str, MtlsMode, MtlsMode)> = vec![
            ("AMTLS-A4 none", vec![], "foo", Permissive, Permissive),
            ("AMTLS-A4 install strict", vec![], "foo", Strict, Strict),
            (
                "AMTLS-A4 mesh",
                vec![pa(ROOT, "default", 1).mode(Strict)],
                "foo",
                Permissive,
                Strict,
            ),
            (
                "AMTLS-A4 namespace beats mesh",
                vec![
                    pa(ROOT, "default", 1).mode(Strict),
                    pa("foo", "default", 1).mode(Disable),
                ],
                "foo",
                Permissive,
                Disable,
            ),
            (
                "PA-04 namespace UNSET inherits mesh",
                vec![pa(ROOT, "default", 1).mode(Strict), pa("foo", "default", 1)],
                "foo",
                Permissive,
                Strict,
            ),
            (
                "AMTLS-13 workload level not consulted",
                vec![
                    pa("foo", "default", 1).mode(Permissive),
                    pa("foo", "httpbin", 2)
                        .sel(&[("app", "httpbin")])
                        .mode(Disable),
                ],
                "foo",
                Permissive,
                Permissive,
            ),
            (
                "PA-13 root namespace uses mesh",
                vec![pa(ROOT, "default", 1).mode(Disable)],
                ROOT,
                Permissive,
                Disable,
            ),
            (
                "PA-V5 oldest namespace policy",
                vec![
                    pa("foo", "new", 9).mode(Disable),
                    pa("foo", "old", 1).mode(Strict),
                ],
                "foo",
                Permissive,
                Strict,
            ),
        ];
        for (id, policies, ns, default, want) in rows {
            assert_eq!(namespace_mode(&policies, ROOT, default, ns), want, "{id}");
        }
    }

    #[test]
    fn ignored_table() {
        // (id, policies, expected (policy name, reason))
        type IgnoredRow = (
            &'static str,
            Vec<PeerAuthn>,
            Vec<(&'static str, &'static str)>,
        );
        let rows: Vec<IgnoredRow> = vec![
            ("none", vec![pa(ROOT, "default", 1).mode(Strict)], vec![]),
            (
                "PA-12",
                vec![
                    pa(ROOT, "httpbin", 1)
                        .sel(&[("app", "httpbin")])
                        .mode(Disable),
                    pa(ROOT, "default", 2).mode(Strict),
                ],
                vec![(
                    "httpbin",
                    "selector policies in the root namespace istio-system are ignored",
                )],
            ),
            (
                "PA-V5",
                vec![
                    pa("ns", "b", 2).mode(Disable),
                    pa("ns", "a", 1).mode(Strict),
                ],
                vec![(
                    "b",
                    "namespace ns already has an older policy ns/a; only the oldest applies",
                )],
            ),
            (
                "PA-V1",
                vec![pa("ns", "a", 1).mode(Strict).port(80, Disable)],
                vec![(
                    "a",
                    "portLevelMtls is ignored on a policy without a selector \
                     (mesh/namespace peer authentication cannot have port level mTLS)",
                )],
            ),
            (
                "PA-11",
                vec![
                    pa("ns", "old", 1).sel(&[("app", "x")]).mode(Strict),
                    pa("ns", "new", 2)
                        .sel(&[("app", "x"), ("v", "1")])
                        .mode(Disable),
                    pa("ns", "other", 3).sel(&[("app", "y")]).mode(Disable),
                ],
                vec![(
                    "new",
                    "older policy ns/old selects every workload this policy selects; \
                     only the oldest matching policy applies",
                )],
            ),
            (
                "PA-11 (narrower older policy does not shadow)",
                vec![
                    pa("ns", "old", 1)
                        .sel(&[("app", "x"), ("v", "1")])
                        .mode(Strict),
                    pa("ns", "new", 2).sel(&[("app", "x")]).mode(Disable),
                ],
                vec![],
            ),
        ];
        for (id, policies, want) in rows {
            let got = ignored(&policies, ROOT);
            let got: Vec<(&str, &str)> = got
                .iter()
                .map(|(r, why)| (r.name.as_str(), why.as_str()))
                .collect();
            assert_eq!(got, want, "{id}");
        }
    }

    #[test]
    fn mode_parse_and_display_roundtrip() {
        for m in [Unset, Disable, Permissive, Strict] {
            assert_eq!(MtlsMode::parse(&m.to_string()), Some(m));
        }
        assert_eq!(MtlsMode::parse("strict"), None);
        assert_eq!(MtlsMode::parse(""), None);
    }

    #[test]
    fn chain_display_names_sources() {
        let l = labels(HTTPBIN);
        let w = Workload {
            namespace: "foo",
            labels: &l,
        };
        let policies = vec![
            pa("foo", "default", 1).mode(Strict),
            pa("foo", "httpbin", 2)
                .sel(&[("app", "httpbin")])
                .port(80, Unset),
        ];
        let got = effective_mode(&policies, ROOT, Permissive, &w, 80);
        assert_eq!(
            got.to_string(),
            "STRICT [port UNSET (PeerAuthentication foo/httpbin) -> \
             workload UNSET (PeerAuthentication foo/httpbin) -> \
             namespace STRICT (PeerAuthentication foo/default)]"
        );
    }
}
