//! Legacy `authentication.istio.io/v1alpha1` `Policy` and `MeshPolicy` (Istio ≤1.5),
//! validated with the 1.4 rules and mapped onto [`PeerAuthn`] so one resolver
//! ([`effective_mode`]) serves both APIs.

use std::collections::BTreeMap;
use std::fmt;

use tessera_model::istio::{LegacyPortSelector as SpecPort, LegacyTargetSelector};
use tessera_model::problem::FieldPath;
use tessera_model::validate::legacy_policy_errors;

use super::mtls::{
    applicable, effective_mode, EffectiveMode, MtlsMode, PeerAuthn, PolicyKind, PolicyRef, Workload,
};

/// `targets[].ports[]`: selects a **Service** port, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LegacyPortSelector {
    Number(u32),
    Name(String),
}

impl fmt::Display for LegacyPortSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(n) => write!(f, "named {n:?}"),
        }
    }
}

/// `targets[]`: a Service short name in the policy's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTarget {
    pub name: String,
    /// Empty => the whole service.
    pub ports: Vec<LegacyPortSelector>,
}

/// `peers[].mtls.mode`, as the model reads it.
pub use tessera_model::istio::LegacyMtlsMode;

/// The peer-authentication part of a legacy policy.
///
/// Only the first `mtls` method in `peers` matters (1.4 ignored the others), so
/// callers reduce the YAML list to this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LegacyPeers {
    /// `peers` absent, empty, or without any `mtls` method (e.g. only `jwt`):
    /// no peer authentication, the server accepts plaintext only.
    #[default]
    None,
    /// `peers: [{mtls: ...}]`. `mode: None` covers `mtls: {}` and `mtls: null`.
    Mtls {
        mode: Option<LegacyMtlsMode>,
        /// Deprecated `allowTls: true`.
        allow_tls: bool,
    },
}

impl LegacyPeers {
    /// The equivalent PeerAuthentication mode: no `peers` is plaintext only (DISABLE),
    /// `mtls` with PERMISSIVE or `allowTls` is PERMISSIVE, any other `mtls` is STRICT.
    pub fn mode(self) -> MtlsMode {
        match self {
            // Emit DISABLE, not PERMISSIVE: keeps the plaintext-only semantics.
            Self::None => MtlsMode::Disable,
            Self::Mtls {
                allow_tls: true, ..
            }
            | Self::Mtls {
                mode: Some(LegacyMtlsMode::Permissive),
                ..
            } => MtlsMode::Permissive,
            Self::Mtls { .. } => MtlsMode::Strict,
        }
    }
}

/// A v1alpha1 `Policy` or `MeshPolicy`, already read from YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyPolicy {
    pub source: PolicyRef,
    /// The policy's namespace; for a `MeshPolicy` the caller sets the mesh root
    /// namespace, because that is where its PeerAuthentication equivalent lives.
    pub namespace: String,
    pub name: String,
    /// Same ordering key as [`PeerAuthn::created`].
    pub created: (i64, u64),
    pub is_mesh_policy: bool,
    pub targets: Vec<LegacyTarget>,
    pub peers: LegacyPeers,
}

impl LegacyPolicy {
    fn order_key(&self) -> (i64, u64, &str, &str) {
        (
            self.created.0,
            self.created.1,
            self.name.as_str(),
            self.namespace.as_str(),
        )
    }
}

impl LegacyPolicy {
    /// Reads a `Policy` or `MeshPolicy` model. A MeshPolicy lives in the mesh root namespace;
    /// `created` is the "oldest wins" ordering key (see [`PeerAuthn::created`]).
    pub fn from_model(
        meta: &tessera_model::meta::ObjectMeta,
        spec: &tessera_model::istio::LegacyPolicySpec,
        is_mesh_policy: bool,
        root_namespace: &str,
        created: (i64, u64),
    ) -> LegacyPolicy {
        let namespace = if is_mesh_policy {
            root_namespace.to_string()
        } else {
            meta.namespace.clone().unwrap_or_default()
        };
        let peers = spec
            .peers
            .iter()
            .find_map(|peer| peer.mtls.as_ref())
            .map(|mtls| LegacyPeers::Mtls {
                mode: mtls.as_ref().and_then(|m| m.mode),
                allow_tls: mtls.as_ref().is_some_and(|m| m.allow_tls),
            })
            .unwrap_or(LegacyPeers::None);
        let targets = spec
            .targets
            .iter()
            .map(|t| LegacyTarget {
                name: t.name.clone(),
                ports: t
                    .ports
                    .iter()
                    .filter_map(|p| match (p.number, &p.name) {
                        (Some(n), _) => Some(LegacyPortSelector::Number(n)),
                        (None, Some(name)) => Some(LegacyPortSelector::Name(name.clone())),
                        (None, None) => None,
                    })
                    .collect(),
            })
            .collect();
        LegacyPolicy {
            source: PolicyRef {
                kind: if is_mesh_policy {
                    PolicyKind::LegacyMeshPolicy
                } else {
                    PolicyKind::LegacyPolicy
                },
                namespace: namespace.clone(),
                name: meta.name.clone(),
            },
            namespace,
            name: meta.name.clone(),
            created,
            is_mesh_policy,
            targets,
            peers,
        }
    }
}

/// A Service port's `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetPort {
    Number(u32),
    /// A named container port, resolved through [`ServiceInfo::container_ports`].
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub name: Option<String>,
    pub port: u32,
    /// Callers fill Kubernetes' default (`targetPort` = `port`) when it is absent.
    pub target_port: TargetPort,
}

/// The parts of a Kubernetes Service the legacy mapping needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    /// `spec.selector`; empty for selector-less Services.
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePortInfo>,
    /// Named container ports (name → number) of the pods the Service selects;
    /// only used to resolve named `targetPort`s. Leave empty when unknown: named
    /// target ports are then reported as problems instead of guessed.
    pub container_ports: BTreeMap<String, u32>,
}

/// The admission checks for a legacy policy (Istio 1.4's wording); empty when valid. The
/// rules live with the validator, which runs them on `tessera validate` and `apply`.
pub fn validate_legacy(p: &LegacyPolicy) -> Vec<(FieldPath, String)> {
    let targets: Vec<LegacyTargetSelector> = p
        .targets
        .iter()
        .map(|t| LegacyTargetSelector {
            name: t.name.clone(),
            ports: t
                .ports
                .iter()
                .map(|sel| match sel {
                    LegacyPortSelector::Number(n) => SpecPort {
                        number: Some(*n),
                        name: None,
                    },
                    LegacyPortSelector::Name(n) => SpecPort {
                        number: None,
                        name: Some(n.clone()),
                    },
                })
                .collect(),
            labels: Default::default(),
        })
        .collect();
    legacy_policy_errors(&p.name, p.is_mesh_policy, &targets)
}

/// Per-Service accumulation of targeted policies, oldest first.
struct Group<'a> {
    service: &'a ServiceInfo,
    contributors: Vec<&'a LegacyPolicy>,
    workload: Option<(&'a LegacyPolicy, MtlsMode)>,
    ports: BTreeMap<u32, (&'a LegacyPolicy, MtlsMode)>,
}

impl<'a> Group<'a> {
    fn contribute(&mut self, p: &'a LegacyPolicy) {
        if !self.contributors.iter().any(|c| std::ptr::eq(*c, p)) {
            self.contributors.push(p);
        }
    }
}

/// Problems found while converting, each naming the policy it concerns.
type Problems = Vec<(PolicyRef, String)>;

/// Maps legacy policies onto PeerAuthentication equivalents.
///
/// - `MeshPolicy default` → selector-less policy in its (root) namespace.
/// - namespace `Policy default` → selector-less policy in that namespace.
/// - `Policy` with targets → a selector policy per targeted Service, selector =
///   the Service's pod selector. A target without ports sets the workload mode;
///   a target with ports leaves the mode UNSET (inherit namespace/mesh, as 1.4
///   fell back to the namespace and mesh policies) and sets `portLevelMtls` keyed
///   by each selected Service port's **targetPort**.
///
/// 1.4 chose, per Service, the oldest policy whose ports match, else the oldest
/// port-less one. A PeerAuthentication resolver only honours one workload policy,
/// so all policies targeting one Service are merged into one [`PeerAuthn`]
/// (oldest contributor first) that reproduces that choice. Its `source` is the
/// policy that sets the workload-wide mode, else the oldest contributor.
///
/// Policies failing [`validate_legacy`] are skipped (1.4 rejected them at
/// admission) and reported, as are unknown services, ports, unresolvable named
/// target ports, selector-less Services, shadowed duplicates, and a namespace
/// `Policy` in the MeshPolicy's namespace (a root selector-less PeerAuthentication
/// would make it mesh-wide). Output is sorted by namespace, age, name; problems
/// by policy, then text.
pub fn to_peer_authn(
    legacy: &[LegacyPolicy],
    services: &[ServiceInfo],
) -> (Vec<PeerAuthn>, Vec<(PolicyRef, String)>) {
    let mut sorted: Vec<&LegacyPolicy> = legacy.iter().collect();
    sorted.sort_by(|a, b| a.order_key().cmp(&b.order_key()));

    let mut problems: Problems = Vec::new();
    let mut mesh: Option<&LegacyPolicy> = None;
    let mut ns_level: BTreeMap<&str, &LegacyPolicy> = BTreeMap::new();
    let mut groups: BTreeMap<(&str, &str), Group> = BTreeMap::new();

    for p in sorted {
        let errs = validate_legacy(p);
        if !errs.is_empty() {
            for (_, e) in errs {
                problems.push((p.source.clone(), format!("invalid, skipped: {e}")));
            }
            continue;
        }
        if p.is_mesh_policy {
            if p.namespace.is_empty() {
                problems.push((
                    p.source.clone(),
                    "MeshPolicy has no namespace; set it to the mesh root namespace, skipped"
                        .to_string(),
                ));
            } else if let Some(m) = mesh {
                problems.push((
                    p.source.clone(),
                    format!(
                        "an older MeshPolicy {} exists; only the oldest applies",
                        m.name
                    ),
                ));
            } else {
                mesh = Some(p);
            }
            continue;
        }
        if p.targets.is_empty() {
            if let Some(older) = ns_level.get(p.namespace.as_str()) {
                problems.push((
                    p.source.clone(),
                    format!(
                        "namespace {ns} already has an older policy {ns}/{}; only the oldest applies",
                        older.name,
                        ns = p.namespace
                    ),
                ));
            } else {
                ns_level.insert(p.namespace.as_str(), p);
            }
            continue;
        }
        for t in &p.targets {
            convert_target(p, t, services, &mut groups, &mut problems);
        }
    }

    let mut out = Vec::new();
    if let Some(m) = mesh {
        out.push(selectorless(m));
    }
    for (ns, p) in ns_level {
        if mesh.is_some_and(|m| m.namespace == ns) {
            problems.push((
                p.source.clone(),
                format!(
                    "a namespace-wide Policy in the root namespace {ns} cannot be expressed as a \
                     PeerAuthentication (it would apply mesh-wide instead of the MeshPolicy); skipped"
                ),
            ));
            continue;
        }
        out.push(selectorless(p));
    }

    let converted: Vec<(&Group, PeerAuthn)> = groups
        .values()
        .filter_map(|g| group_to_peer_authn(g).map(|pa| (g, pa)))
        .collect();
    report_overlaps(&converted, &mut problems);
    out.extend(converted.into_iter().map(|(_, pa)| pa));

    out.sort_by(|a, b| {
        (&a.namespace, a.created, &a.source).cmp(&(&b.namespace, b.created, &b.source))
    });
    problems.sort();
    problems.dedup();
    (out, problems)
}

fn selectorless(p: &LegacyPolicy) -> PeerAuthn {
    PeerAuthn {
        source: p.source.clone(),
        namespace: p.namespace.clone(),
        created: p.created,
        selector: None,
        mode: p.peers.mode(),
        port_level: BTreeMap::new(),
    }
}

fn convert_target<'a>(
    p: &'a LegacyPolicy,
    t: &LegacyTarget,
    services: &'a [ServiceInfo],
    groups: &mut BTreeMap<(&'a str, &'a str), Group<'a>>,
    problems: &mut Problems,
) {
    let mut problem = |msg: String| problems.push((p.source.clone(), msg));
    let Some(svc) = services
        .iter()
        .find(|s| s.namespace == p.namespace && s.name == t.name)
    else {
        problem(format!(
            "target service {:?} does not exist in namespace {}; target skipped",
            t.name, p.namespace
        ));
        return;
    };
    let svc_id = format!("{}/{}", svc.namespace, svc.name);
    if svc.selector.is_empty() {
        // An empty selector would turn into a namespace-wide policy.
        problem(format!(
            "target service {svc_id} has no pod selector, so its workloads cannot be selected \
             by labels; target skipped"
        ));
        return;
    }
    let mode = p.peers.mode();
    let group = groups
        .entry((svc.namespace.as_str(), svc.name.as_str()))
        .or_insert_with(|| Group {
            service: svc,
            contributors: Vec::new(),
            workload: None,
            ports: BTreeMap::new(),
        });

    if t.ports.is_empty() {
        match group.workload {
            Some((older, _)) if !std::ptr::eq(older, p) => problem(format!(
                "service {svc_id} already has an older policy {}/{} without ports; \
                 only the oldest applies",
                older.namespace, older.name
            )),
            Some(_) => {}
            None => {
                group.workload = Some((p, mode));
                group.contribute(p);
            }
        }
        return;
    }

    for sel in &t.ports {
        let found = svc.ports.iter().find(|sp| match sel {
            LegacyPortSelector::Number(n) => sp.port == *n,
            LegacyPortSelector::Name(n) => sp.name.as_deref() == Some(n.as_str()),
        });
        let Some(sp) = found else {
            problem(format!(
                "target service {svc_id} has no port {sel}; port skipped"
            ));
            continue;
        };
        let target = match &sp.target_port {
            TargetPort::Number(n) => *n,
            TargetPort::Name(name) => match svc.container_ports.get(name) {
                Some(n) => *n,
                None => {
                    problem(format!(
                        "targetPort {name:?} of service {svc_id} port {} cannot be resolved: \
                         no container port with that name is known; port skipped",
                        sp.port
                    ));
                    continue;
                }
            },
        };
        match group.ports.get(&target) {
            Some((older, _)) if !std::ptr::eq(*older, p) => problem(format!(
                "target port {target} (service port {}) of service {svc_id} is already selected \
                 by older policy {}/{}; only the oldest applies",
                sp.port, older.namespace, older.name
            )),
            Some(_) => {}
            None => {
                group.ports.insert(target, (p, mode));
                group.contribute(p);
            }
        }
    }
}

fn group_to_peer_authn(g: &Group) -> Option<PeerAuthn> {
    let oldest = g.contributors.first()?;
    let source = g.workload.map_or(*oldest, |(p, _)| p);
    Some(PeerAuthn {
        source: source.source.clone(),
        namespace: g.service.namespace.clone(),
        created: oldest.created,
        selector: Some(g.service.selector.clone()),
        mode: g.workload.map_or(MtlsMode::Unset, |(_, m)| m),
        port_level: g.ports.iter().map(|(port, (_, m))| (*port, *m)).collect(),
    })
}

/// Two selectors can match one pod unless they disagree on some label value.
fn compatible(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|w| w == v))
}

/// 1.4 applied policies per Service; after conversion a pod backing two targeted
/// Services only gets the oldest workload policy, so flag the younger one.
fn report_overlaps(converted: &[(&Group, PeerAuthn)], problems: &mut Problems) {
    for (i, (ga, a)) in converted.iter().enumerate() {
        for (gb, b) in converted.iter().skip(i + 1) {
            if a.namespace != b.namespace || !compatible(&ga.service.selector, &gb.service.selector)
            {
                continue;
            }
            let (older, younger, og, yg) = if (a.created, &a.source) <= (b.created, &b.source) {
                (a, b, ga, gb)
            } else {
                (b, a, gb, ga)
            };
            problems.push((
                younger.source.clone(),
                format!(
                    "services {ns}/{} and {ns}/{} can select the same workloads; after conversion \
                     such workloads get only the older policy ({})",
                    yg.service.name,
                    og.service.name,
                    older.source,
                    ns = younger.namespace
                ),
            ));
        }
    }
}

/// Effective mode when both APIs exist, as in Istio 1.5: a v1beta1 policy that applies to
/// the workload makes it ignore the legacy ones.
///
/// If any v1beta1 PeerAuthentication applies to the workload — a mesh-level,
/// namespace-level or matching workload-level policy, even one whose mode is
/// UNSET — only the beta policies are used; otherwise the legacy policies
/// converted by [`to_peer_authn`] are used. The two sets are never mixed, so a
/// beta PERMISSIVE namespace policy beats an alpha STRICT service policy, and a
/// single beta mesh-level policy switches the whole mesh to the beta API.
/// Root-namespace selector policies do not count: they never apply.
pub fn effective_mode_with_legacy(
    beta: &[PeerAuthn],
    legacy_converted: &[PeerAuthn],
    root_namespace: &str,
    default_mode: MtlsMode,
    w: &Workload,
    target_port: u32,
) -> EffectiveMode {
    let policies = if applicable(beta, root_namespace, w).any() {
        beta
    } else {
        legacy_converted
    };
    effective_mode(policies, root_namespace, default_mode, w, target_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::mtls::tests::{labels, pa, ROOT};
    use crate::policy::mtls::PolicyKind;
    use MtlsMode::*;

    const MTLS: LegacyPeers = LegacyPeers::Mtls {
        mode: None,
        allow_tls: false,
    };
    const MTLS_STRICT: LegacyPeers = LegacyPeers::Mtls {
        mode: Some(LegacyMtlsMode::Strict),
        allow_tls: false,
    };
    const MTLS_PERMISSIVE: LegacyPeers = LegacyPeers::Mtls {
        mode: Some(LegacyMtlsMode::Permissive),
        allow_tls: false,
    };
    const MTLS_ALLOW_TLS: LegacyPeers = LegacyPeers::Mtls {
        mode: Some(LegacyMtlsMode::Strict),
        allow_tls: true,
    };

    fn policy(ns: &str, name: &str, t: i64) -> LegacyPolicy {
        LegacyPolicy {
            source: PolicyRef::new(PolicyKind::LegacyPolicy, ns, name),
            namespace: ns.to_string(),
            name: name.to_string(),
            created: (t, 0),
            is_mesh_policy: false,
            targets: vec![],
            peers: LegacyPeers::None,
        }
    }

    fn mesh_policy(name: &str, t: i64) -> LegacyPolicy {
        LegacyPolicy {
            source: PolicyRef::new(PolicyKind::LegacyMeshPolicy, "", name),
            namespace: ROOT.to_string(),
            name: name.to_string(),
            created: (t, 0),
            is_mesh_policy: true,
            targets: vec![],
            peers: LegacyPeers::None,
        }
    }

    impl LegacyPolicy {
        fn target(mut self, svc: &str, ports: &[LegacyPortSelector]) -> Self {
            self.targets.push(LegacyTarget {
                name: svc.to_string(),
                ports: ports.to_vec(),
            });
            self
        }
        fn peers(mut self, p: LegacyPeers) -> Self {
            self.peers = p;
            self
        }
    }

    fn num(n: u32) -> LegacyPortSelector {
        LegacyPortSelector::Number(n)
    }
    fn named(n: &str) -> LegacyPortSelector {
        LegacyPortSelector::Name(n.to_string())
    }

    fn port(name: &str, port: u32, target: TargetPort) -> ServicePortInfo {
        ServicePortInfo {
            name: Some(name.to_string()),
            port,
            target_port: target,
        }
    }

    fn service(
        ns: &str,
        name: &str,
        sel: &[(&str, &str)],
        ports: Vec<ServicePortInfo>,
    ) -> ServiceInfo {
        ServiceInfo {
            namespace: ns.to_string(),
            name: name.to_string(),
            selector: labels(sel),
            ports,
            container_ports: BTreeMap::new(),
        }
    }

    /// Seed-002 fixture: httpbin (8000→80, plus 9000→9000 to probe "other ports")
    /// and sleep in `full`, `partial` and `legacy`.
    fn services() -> Vec<ServiceInfo> {
        let mut out = Vec::new();
        for ns in ["full", "partial", "legacy"] {
            out.push(service(
                ns,
                "httpbin",
                &[("app", "httpbin")],
                vec![
                    port("http", 8000, TargetPort::Number(80)),
                    port("tcp-echo", 9000, TargetPort::Number(9000)),
                ],
            ));
            out.push(service(
                ns,
                "sleep",
                &[("app", "sleep")],
                vec![port("http", 80, TargetPort::Number(80))],
            ));
        }
        let mut web = service(
            "full",
            "web",
            &[("app", "web")],
            vec![
                port("http", 8080, TargetPort::Name("http-web".to_string())),
                port("admin", 9090, TargetPort::Name("admin".to_string())),
            ],
        );
        web.container_ports.insert("http-web".to_string(), 8081);
        out.push(web);
        out.push(service(
            "full",
            "external",
            &[],
            vec![port("http", 80, TargetPort::Number(80))],
        ));
        out.push(service(
            "full",
            "httpbin-alias",
            &[("app", "httpbin")],
            vec![port("http", 8000, TargetPort::Number(80))],
        ));
        out
    }

    const HTTPBIN: &[(&str, &str)] = &[("app", "httpbin"), ("version", "v1")];
    const NOSIDECAR: &[(&str, &str)] = &[("app", "httpbin"), ("version", "nosidecar")];
    const SLEEP: &[(&str, &str)] = &[("app", "sleep")];

    fn seed_policy(peers: LegacyPeers) -> LegacyPolicy {
        policy("full", "httpbin", 10)
            .target("httpbin", &[])
            .peers(peers)
    }

    struct Row {
        id: &'static str,
        legacy: Vec<LegacyPolicy>,
        beta: Vec<PeerAuthn>,
        ns: &'static str,
        labels: &'static [(&'static str, &'static str)],
        port: u32,
        default: MtlsMode,
        want: MtlsMode,
    }

    fn row(
        id: &'static str,
        legacy: Vec<LegacyPolicy>,
        ns: &'static str,
        labels: &'static [(&'static str, &'static str)],
        port: u32,
        want: MtlsMode,
    ) -> Row {
        Row {
            id,
            legacy,
            beta: vec![],
            ns,
            labels,
            port,
            default: Permissive,
            want,
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            row(
                "LEG-01",
                vec![seed_policy(MTLS)],
                "full",
                HTTPBIN,
                80,
                Strict,
            ),
            row(
                "LEG-01 (mode STRICT spelled out)",
                vec![seed_policy(MTLS_STRICT)],
                "full",
                HTTPBIN,
                80,
                Strict,
            ),
            row(
                "LEG-01 (no ports: every port)",
                vec![seed_policy(MTLS)],
                "full",
                HTTPBIN,
                9000,
                Strict,
            ),
            row(
                "seed-002 STRICT: sleep.full unaffected",
                vec![seed_policy(MTLS)],
                "full",
                SLEEP,
                80,
                Permissive,
            ),
            row(
                "seed-002 STRICT: httpbin.partial unaffected",
                vec![seed_policy(MTLS)],
                "partial",
                HTTPBIN,
                80,
                Permissive,
            ),
            row(
                "seed-002 STRICT: httpbin-nosidecar.partial unaffected",
                vec![seed_policy(MTLS)],
                "partial",
                NOSIDECAR,
                80,
                Permissive,
            ),
            row(
                "LEG-02",
                vec![seed_policy(LegacyPeers::None)],
                "full",
                HTTPBIN,
                80,
                Disable,
            ),
            row(
                "seed-002 plaintext: sleep.full unaffected",
                vec![seed_policy(LegacyPeers::None)],
                "full",
                SLEEP,
                80,
                Permissive,
            ),
            row(
                "seed-002 plaintext: httpbin.partial unaffected",
                vec![seed_policy(LegacyPeers::None)],
                "partial",
                HTTPBIN,
                80,
                Permissive,
            ),
            Row {
                id: "LEG-03",
                legacy: vec![mesh_policy("default", 1).peers(MTLS_PERMISSIVE)],
                beta: vec![],
                ns: "legacy",
                labels: HTTPBIN,
                port: 80,
                // MeshPolicy decides, not the install default.
                default: Strict,
                want: Permissive,
            },
            row(
                "LEG-03 (MeshPolicy mtls {})",
                vec![mesh_policy("default", 1).peers(MTLS)],
                "partial",
                HTTPBIN,
                80,
                Strict,
            ),
            row(
                "LEG-03 (MeshPolicy without peers)",
                vec![mesh_policy("default", 1)],
                "partial",
                HTTPBIN,
                80,
                Disable,
            ),
            row(
                "LEG-03 (allowTls is permissive)",
                vec![mesh_policy("default", 1).peers(MTLS_ALLOW_TLS)],
                "partial",
                HTTPBIN,
                80,
                Permissive,
            ),
            row(
                "LEG-03 (namespace Policy beats MeshPolicy)",
                vec![
                    mesh_policy("default", 1).peers(MTLS_PERMISSIVE),
                    policy("full", "default", 2).peers(MTLS),
                ],
                "full",
                SLEEP,
                80,
                Strict,
            ),
            row(
                "LEG-05 (target port 80)",
                vec![policy("full", "httpbin", 10)
                    .target("httpbin", &[num(8000)])
                    .peers(MTLS)],
                "full",
                HTTPBIN,
                80,
                Strict,
            ),
            row(
                "LEG-05 (service port number is not a target port)",
                vec![policy("full", "httpbin", 10)
                    .target("httpbin", &[num(8000)])
                    .peers(MTLS)],
                "full",
                HTTPBIN,
                8000,
                Permissive,
            ),
            row(
                "LEG-05 (other port inherits default)",
                vec![policy("full", "httpbin", 10)
                    .target("httpbin", &[num(8000)])
                    .peers(MTLS)],
                "full",
                HTTPBIN,
                9000,
                Permissive,
            ),
            row(
                "LEG-05 (other port inherits namespace Policy)",
                vec![
                    policy("full", "default", 1),
                    policy("full", "httpbin", 10)
                        .target("httpbin", &[num(8000)])
                        .peers(MTLS),
                ],
                "full",
                HTTPBIN,
                9000,
                Disable,
            ),
            row(
                "LEG-05 (port selected by name)",
                vec![policy("full", "httpbin", 10)
                    .target("httpbin", &[named("http")])
                    .peers(MTLS)],
                "full",
                HTTPBIN,
                80,
                Strict,
            ),
            row(
                "LEG-05 (named targetPort via containerPorts)",
                vec![policy("full", "web", 10)
                    .target("web", &[num(8080)])
                    .peers(MTLS)],
                "full",
                &[("app", "web")],
                8081,
                Strict,
            ),
            row(
                "LEG-05 (port policy beats older service-wide policy)",
                vec![
                    policy("full", "wide", 1)
                        .target("httpbin", &[])
                        .peers(LegacyPeers::None),
                    policy("full", "port", 2)
                        .target("httpbin", &[num(8000)])
                        .peers(MTLS),
                ],
                "full",
                HTTPBIN,
                80,
                Strict,
            ),
            row(
                "LEG-05 (service-wide policy covers other ports)",
                vec![
                    policy("full", "port", 1)
                        .target("httpbin", &[num(8000)])
                        .peers(MTLS),
                    policy("full", "wide", 2)
                        .target("httpbin", &[])
                        .peers(LegacyPeers::None),
                ],
                "full",
                HTTPBIN,
                9000,
                Disable,
            ),
            Row {
                id: "LEG-06",
                legacy: vec![seed_policy(MTLS)],
                beta: vec![pa("full", "default", 20).mode(Permissive)],
                ns: "full",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Permissive,
            },
            Row {
                id: "LEG-06 (beta UNSET still switches to beta)",
                legacy: vec![seed_policy(MTLS)],
                beta: vec![pa("full", "default", 20)],
                ns: "full",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Permissive,
            },
            Row {
                id: "LEG-06 (beta mesh policy applies everywhere)",
                legacy: vec![seed_policy(LegacyPeers::None)],
                beta: vec![pa(ROOT, "default", 20).mode(Strict)],
                ns: "full",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
            },
            Row {
                id: "LEG-06 (beta elsewhere leaves alpha in charge)",
                legacy: vec![seed_policy(MTLS)],
                beta: vec![pa("partial", "default", 20).mode(Permissive)],
                ns: "full",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
            },
            Row {
                id: "LEG-06 (root selector beta policy does not count)",
                legacy: vec![seed_policy(MTLS)],
                beta: vec![pa(ROOT, "httpbin", 20)
                    .sel(&[("app", "httpbin")])
                    .mode(Disable)],
                ns: "full",
                labels: HTTPBIN,
                port: 80,
                default: Permissive,
                want: Strict,
            },
        ]
    }

    #[test]
    fn legacy_resolution_table() {
        let svcs = services();
        for r in rows() {
            let (converted, _problems) = to_peer_authn(&r.legacy, &svcs);
            let l = labels(r.labels);
            let w = Workload {
                namespace: r.ns,
                labels: &l,
            };
            let got = effective_mode_with_legacy(&r.beta, &converted, ROOT, r.default, &w, r.port);
            assert_eq!(got.mode, r.want, "{}: {}", r.id, got);
        }
    }

    #[test]
    fn decision_names_legacy_source() {
        let (converted, problems) = to_peer_authn(&[seed_policy(MTLS)], &services());
        assert!(problems.is_empty(), "{problems:?}");
        let l = labels(HTTPBIN);
        let w = Workload {
            namespace: "full",
            labels: &l,
        };
        let got = effective_mode_with_legacy(&[], &converted, ROOT, Permissive, &w, 80);
        assert_eq!(
            got.to_string(),
            "STRICT [workload STRICT (Policy full/httpbin)]"
        );
    }

    #[test]
    fn conversion_shape_table() {
        // (id, legacy, expected PeerAuthn list)
        let httpbin_sel = Some(labels(&[("app", "httpbin")]));
        let src = |kind, ns: &str, name: &str| PolicyRef::new(kind, ns, name);
        let rows: Vec<(&str, Vec<LegacyPolicy>, Vec<PeerAuthn>)> = vec![
            (
                "LEG-03 MeshPolicy → root selector-less",
                vec![mesh_policy("default", 1).peers(MTLS)],
                vec![PeerAuthn {
                    source: src(PolicyKind::LegacyMeshPolicy, "", "default"),
                    namespace: ROOT.to_string(),
                    created: (1, 0),
                    selector: None,
                    mode: Strict,
                    port_level: BTreeMap::new(),
                }],
            ),
            (
                "LEG-02 service policy without peers → DISABLE",
                vec![seed_policy(LegacyPeers::None)],
                vec![PeerAuthn {
                    source: src(PolicyKind::LegacyPolicy, "full", "httpbin"),
                    namespace: "full".to_string(),
                    created: (10, 0),
                    selector: httpbin_sel.clone(),
                    mode: Disable,
                    port_level: BTreeMap::new(),
                }],
            ),
            (
                "LEG-05 port 8000 keyed by targetPort 80",
                vec![policy("full", "httpbin", 10)
                    .target("httpbin", &[num(8000)])
                    .peers(MTLS)],
                vec![PeerAuthn {
                    source: src(PolicyKind::LegacyPolicy, "full", "httpbin"),
                    namespace: "full".to_string(),
                    created: (10, 0),
                    selector: httpbin_sel.clone(),
                    mode: Unset,
                    port_level: [(80, Strict)].into_iter().collect(),
                }],
            ),
            (
                "several targets → one policy each",
                vec![policy("full", "both", 10)
                    .target("httpbin", &[])
                    .target("sleep", &[])
                    .peers(MTLS_PERMISSIVE)],
                vec![
                    PeerAuthn {
                        source: src(PolicyKind::LegacyPolicy, "full", "both"),
                        namespace: "full".to_string(),
                        created: (10, 0),
                        selector: httpbin_sel.clone(),
                        mode: Permissive,
                        port_level: BTreeMap::new(),
                    },
                    PeerAuthn {
                        source: src(PolicyKind::LegacyPolicy, "full", "both"),
                        namespace: "full".to_string(),
                        created: (10, 0),
                        selector: Some(labels(&[("app", "sleep")])),
                        mode: Permissive,
                        port_level: BTreeMap::new(),
                    },
                ],
            ),
            (
                "port and service-wide policies merge",
                vec![
                    policy("full", "wide", 5)
                        .target("httpbin", &[])
                        .peers(LegacyPeers::None),
                    policy("full", "port", 3)
                        .target("httpbin", &[num(8000)])
                        .peers(MTLS),
                ],
                vec![PeerAuthn {
                    source: src(PolicyKind::LegacyPolicy, "full", "wide"),
                    namespace: "full".to_string(),
                    created: (3, 0),
                    selector: httpbin_sel.clone(),
                    mode: Disable,
                    port_level: [(80, Strict)].into_iter().collect(),
                }],
            ),
        ];
        let svcs = services();
        for (id, legacy, want) in rows {
            let (got, problems) = to_peer_authn(&legacy, &svcs);
            assert!(problems.is_empty(), "{id}: {problems:?}");
            assert_eq!(got, want, "{id}");
        }
    }

    #[test]
    fn conversion_problems_table() {
        // (id, legacy, expected (policy name, problem), expected converted count)
        type ProblemRow = (
            &'static str,
            Vec<LegacyPolicy>,
            Vec<(&'static str, &'static str)>,
            usize,
        );
        let rows: Vec<ProblemRow> = vec![
            (
                "LEG-04",
                vec![policy("full", "foo", 1).peers(MTLS)],
                vec![(
                    "foo",
                    "invalid, skipped: authentication policy with no target rules  must be named \"default\", found \"foo\"",
                )],
                0,
            ),
            (
                "unknown target service",
                vec![policy("full", "p", 1).target("nope", &[]).peers(MTLS)],
                vec![(
                    "p",
                    "target service \"nope\" does not exist in namespace full; target skipped",
                )],
                0,
            ),
            (
                "target service in another namespace",
                vec![policy("other", "p", 1).target("httpbin", &[]).peers(MTLS)],
                vec![(
                    "p",
                    "target service \"httpbin\" does not exist in namespace other; target skipped",
                )],
                0,
            ),
            (
                "unknown port number",
                vec![policy("full", "p", 1)
                    .target("httpbin", &[num(81), num(8000)])
                    .peers(MTLS)],
                vec![("p", "target service full/httpbin has no port 81; port skipped")],
                1,
            ),
            (
                "LEG-05 (a target port number is not a service port)",
                vec![policy("full", "p", 1)
                    .target("httpbin", &[num(80)])
                    .peers(MTLS)],
                vec![("p", "target service full/httpbin has no port 80; port skipped")],
                0,
            ),
            (
                "unknown port name",
                vec![policy("full", "p", 1)
                    .target("httpbin", &[named("grpc")])
                    .peers(MTLS)],
                vec![(
                    "p",
                    "target service full/httpbin has no port named \"grpc\"; port skipped",
                )],
                0,
            ),
            (
                "unresolvable named targetPort",
                vec![policy("full", "p", 1)
                    .target("web", &[named("admin")])
                    .peers(MTLS)],
                vec![(
                    "p",
                    "targetPort \"admin\" of service full/web port 9090 cannot be resolved: \
                     no container port with that name is known; port skipped",
                )],
                0,
            ),
            (
                "service without selector",
                vec![policy("full", "p", 1).target("external", &[]).peers(MTLS)],
                vec![(
                    "p",
                    "target service full/external has no pod selector, so its workloads cannot \
                     be selected by labels; target skipped",
                )],
                0,
            ),
            (
                "two service-wide policies for one service",
                vec![
                    policy("full", "old", 1).target("httpbin", &[]).peers(MTLS),
                    policy("full", "new", 2).target("httpbin", &[]),
                ],
                vec![(
                    "new",
                    "service full/httpbin already has an older policy full/old without ports; \
                     only the oldest applies",
                )],
                1,
            ),
            (
                "two port policies for one port",
                vec![
                    policy("full", "old", 1)
                        .target("httpbin", &[num(8000)])
                        .peers(MTLS),
                    policy("full", "new", 2).target("httpbin", &[named("http")]),
                ],
                vec![(
                    "new",
                    "target port 80 (service port 8000) of service full/httpbin is already \
                     selected by older policy full/old; only the oldest applies",
                )],
                1,
            ),
            (
                "services with overlapping selectors",
                vec![
                    policy("full", "a", 1).target("httpbin", &[]).peers(MTLS),
                    policy("full", "b", 2).target("httpbin-alias", &[]),
                ],
                vec![(
                    "b",
                    "services full/httpbin-alias and full/httpbin can select the same workloads; \
                     after conversion such workloads get only the older policy (Policy full/a)",
                )],
                2,
            ),
            (
                "namespace Policy in the MeshPolicy namespace",
                vec![
                    mesh_policy("default", 1).peers(MTLS),
                    policy(ROOT, "default", 2),
                ],
                vec![(
                    "default",
                    "a namespace-wide Policy in the root namespace istio-system cannot be \
                     expressed as a PeerAuthentication (it would apply mesh-wide instead of the \
                     MeshPolicy); skipped",
                )],
                1,
            ),
            (
                "MeshPolicy not named default",
                vec![mesh_policy("other", 1).peers(MTLS)],
                vec![(
                    "other",
                    "invalid, skipped: cluster-scoped authentication policy name must be \"default\", found \"other\"",
                )],
                0,
            ),
        ];
        let svcs = services();
        for (id, legacy, want, count) in rows {
            let (got, problems) = to_peer_authn(&legacy, &svcs);
            let problems: Vec<(&str, &str)> = problems
                .iter()
                .map(|(r, m)| (r.name.as_str(), m.as_str()))
                .collect();
            assert_eq!(problems, want, "{id}");
            assert_eq!(got.len(), count, "{id}: {got:?}");
        }
    }

    #[test]
    fn validate_legacy_table() {
        let rows: Vec<(&str, LegacyPolicy, Vec<&str>)> = vec![
            ("LEG-04", policy("full", "foo", 1), vec![
                "authentication policy with no target rules  must be named \"default\", found \"foo\"",
            ]),
            (
                "default with targets",
                policy("full", "default", 1).target("httpbin", &[]),
                vec!["authentication policy with name \"default\" must not have any target rules"],
            ),
            ("MeshPolicy name", mesh_policy("mesh", 1), vec![
                "cluster-scoped authentication policy name must be \"default\", found \"mesh\"",
            ]),
            (
                "MeshPolicy targets",
                mesh_policy("default", 1).target("httpbin", &[]),
                vec!["cluster-scoped authentication policy must not have targets"],
            ),
            (
                "MeshPolicy name and targets",
                mesh_policy("x", 1).target("httpbin", &[]),
                vec![
                    "cluster-scoped authentication policy name must be \"default\", found \"x\"",
                    "cluster-scoped authentication policy must not have targets",
                ],
            ),
            (
                "target name and ports",
                policy("full", "p", 1).target(
                    "Httpbin.full",
                    &[num(0), num(70000), named(""), named("HTTP"), num(8000), named("http")],
                ),
                vec![
                    "target name \"Httpbin.full\" must be a valid label",
                    "port number 0 must be in the range 1..65535",
                    "port number 70000 must be in the range 1..65535",
                    "subset name cannot be empty",
                    "subset name is invalid: HTTP",
                ],
            ),
            ("valid namespace default", policy("full", "default", 1), vec![]),
            (
                "valid service policy",
                policy("full", "httpbin", 1).target("httpbin", &[num(8000)]),
                vec![],
            ),
            ("valid MeshPolicy", mesh_policy("default", 1), vec![]),
        ];
        for (id, p, want) in rows {
            let got: Vec<String> = validate_legacy(&p).into_iter().map(|(_, m)| m).collect();
            assert_eq!(got, want, "{id}");
        }
    }

    #[test]
    fn peers_mode_table() {
        let rows = [
            ("LEG-02 peers absent", LegacyPeers::None, Disable),
            ("LEG-01 mtls {}", MTLS, Strict),
            ("LEG-01 mode STRICT", MTLS_STRICT, Strict),
            ("LEG-03 mode PERMISSIVE", MTLS_PERMISSIVE, Permissive),
            ("LEG-03 allowTls", MTLS_ALLOW_TLS, Permissive),
        ];
        for (id, peers, want) in rows {
            assert_eq!(peers.mode(), want, "{id}");
        }
    }
}
