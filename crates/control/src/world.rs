//! What the compiler reads: the registry, the mTLS policies in both API generations
//! (already resolved), DestinationRules, Sidecars, Gateways, VirtualServices and Secrets,
//! derived once per store revision, with the lookups every compiler pass and the insight
//! verbs share (a workload's identity, a port's effective mode, the DestinationRule a
//! client uses for a service, the Sidecar that applies to a workload).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tessera_model::istio::{
    ClientTlsMode, ClientTlsSettings, GatewaySpec, IstioEgressListener, IstioIngressListener,
    TrafficPolicy, VirtualServiceSpec,
};
use tessera_model::{meta::IntOrString, Resource};

use crate::objects::Objects;
use crate::policy::{
    ignored, namespace_mode, to_peer_authn, EffectiveMode, LegacyPolicy, MeshOptions, MtlsMode,
    PeerAuthn, PolicyRef, ServiceInfo, ServicePortInfo, TargetPort,
};
use crate::registry::{Registry, ServiceEntry, ServicePortEntry, WorkloadEntry, CLUSTER_DOMAIN};

/// A DestinationRule as the compiler uses it.
#[derive(Debug, Clone)]
struct DestinationRuleEntry {
    namespace: String,
    /// FQDN or wildcard (`*.local`, `*`).
    host: String,
    export_to: Vec<String>,
    /// `workloadSelector`: only these clients (in the rule's namespace) use it.
    selector: Option<BTreeMap<String, String>>,
    created: (i64, u64),
    traffic_policy: Option<TrafficPolicy>,
    /// How to name it in reasons.
    source: String,
}

#[derive(Debug, Clone)]
pub struct GatewayRule {
    pub namespace: String,
    pub name: String,
    pub created: (i64, u64),
    pub spec: GatewaySpec,
}

#[derive(Debug, Clone)]
pub struct VirtualServiceRule {
    pub namespace: String,
    pub name: String,
    pub created: (i64, u64),
    pub spec: VirtualServiceSpec,
}

/// A Sidecar resource as the compiler reads it.
#[derive(Debug, Clone)]
pub struct SidecarRule {
    pub namespace: String,
    pub name: String,
    pub selector: Option<std::collections::BTreeMap<String, String>>,
    pub created: (i64, u64),
    pub ingress: Vec<IstioIngressListener>,
    /// Empty: the proxy may reach every service.
    pub egress: Vec<IstioEgressListener>,
}

/// Everything the compiler reads, derived once per store revision.
#[derive(Debug, Clone)]
pub struct World {
    pub revision: u64,
    pub options: MeshOptions,
    pub registry: Registry,
    beta: Vec<PeerAuthn>,
    legacy: Vec<PeerAuthn>,
    rules: Vec<DestinationRuleEntry>,
    pub(crate) sidecars: Vec<crate::world::SidecarRule>,
    pub(crate) gateways: Vec<crate::world::GatewayRule>,
    pub(crate) virtual_services: Vec<crate::world::VirtualServiceRule>,
    /// AuthorizationPolicies, by namespace and name.
    pub(crate) authorization: Vec<AuthorizationRule>,
    /// Secrets by (namespace, name): their decoded data, for `credentialName`.
    pub(crate) secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    /// Policies (or parts) that cannot take effect, with why.
    pub problems: Vec<(PolicyRef, String)>,
    /// The outbound side compiled once for every proxy that shares it.
    pub(crate) outbound: crate::outbound_cache::OutboundCache,
}

/// An AuthorizationPolicy as the compiler reads it.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizationRule {
    pub namespace: String,
    pub name: String,
    pub selector: Option<tessera_model::meta::Labels>,
    /// It names resources (`targetRefs`) instead of selecting workloads.
    pub targets_resources: bool,
    pub spec: tessera_model::istio::AuthorizationPolicySpec,
}

impl AuthorizationRule {
    fn from_model(ap: &tessera_model::istio::AuthorizationPolicy) -> AuthorizationRule {
        AuthorizationRule {
            namespace: ap.metadata.namespace.clone().unwrap_or_default(),
            name: ap.metadata.name.clone(),
            selector: ap.spec.selector.as_ref().map(|s| s.match_labels.clone()),
            targets_resources: ap.spec.target_ref.is_some() || !ap.spec.target_refs.is_empty(),
            spec: ap.spec.clone(),
        }
    }
}

impl World {
    pub fn build(objects: &Objects, options: &MeshOptions) -> World {
        let registry = Registry::from_objects(objects);
        let root = options.root_namespace.as_str();
        let mut beta = Vec::new();
        let mut legacy_policies = Vec::new();
        let mut rules = Vec::new();
        let mut sidecars = Vec::new();
        let mut gateways = Vec::new();
        let mut virtual_services = Vec::new();
        let mut authorization = Vec::new();
        let mut secrets = BTreeMap::new();
        for s in objects.iter() {
            let created = s.created();
            match &s.resource {
                Resource::Sidecar(sc) => sidecars.push(crate::world::SidecarRule {
                    namespace: sc.metadata.namespace.clone().unwrap_or_default(),
                    name: sc.metadata.name.clone(),
                    selector: sc.spec.workload_selector.as_ref().map(|s| s.labels.clone()),
                    created,
                    ingress: sc.spec.ingress.clone(),
                    egress: sc.spec.egress.clone(),
                }),
                Resource::Gateway(gw) => gateways.push(crate::world::GatewayRule {
                    namespace: gw.metadata.namespace.clone().unwrap_or_default(),
                    name: gw.metadata.name.clone(),
                    created,
                    spec: gw.spec.clone(),
                }),
                Resource::VirtualService(vs) => {
                    virtual_services.push(crate::world::VirtualServiceRule {
                        namespace: vs.metadata.namespace.clone().unwrap_or_default(),
                        name: vs.metadata.name.clone(),
                        created,
                        spec: vs.spec.clone(),
                    })
                }
                Resource::Secret(secret) => {
                    secrets.insert(
                        (
                            secret.metadata.namespace.clone().unwrap_or_default(),
                            secret.metadata.name.clone(),
                        ),
                        secret.files(),
                    );
                }
                Resource::PeerAuthentication(pa) => beta.push(PeerAuthn::from_model(pa, created)),
                Resource::AuthorizationPolicy(ap) => {
                    authorization.push(AuthorizationRule::from_model(ap))
                }
                Resource::Policy(p) => legacy_policies.push(LegacyPolicy::from_model(
                    &p.metadata,
                    &p.spec,
                    false,
                    root,
                    created,
                )),
                Resource::MeshPolicy(p) => legacy_policies.push(LegacyPolicy::from_model(
                    &p.metadata,
                    &p.spec,
                    true,
                    root,
                    created,
                )),
                Resource::DestinationRule(dr) => {
                    let ns = dr.metadata.namespace.clone().unwrap_or_default();
                    rules.push(DestinationRuleEntry {
                        host: fqdn(&dr.spec.host, &ns),
                        export_to: dr.spec.export_to.clone(),
                        selector: dr
                            .spec
                            .workload_selector
                            .as_ref()
                            .map(|s| s.match_labels.clone()),
                        created,
                        traffic_policy: dr.spec.traffic_policy.clone(),
                        source: format!("DestinationRule {ns}/{}", dr.metadata.name),
                        namespace: ns,
                    });
                }
                _ => {}
            }
        }
        if options.mtls_enabled && !options.auto_mtls {
            rules.push(installed_mtls_rule(root));
        }
        let infos = service_infos(&registry);
        let (legacy, mut problems) = to_peer_authn(&legacy_policies, &infos);
        problems.extend(ignored(&beta, root));
        problems.sort();
        authorization.sort_by(|a: &AuthorizationRule, b| {
            (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
        });
        World {
            revision: objects.revision(),
            options: options.clone(),
            registry,
            beta,
            legacy,
            rules,
            sidecars,
            gateways,
            virtual_services,
            authorization,
            secrets,
            problems,
            outbound: Default::default(),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.options.trust_domain
    }

    pub fn identity_of(&self, w: &WorkloadEntry) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain(),
            w.namespace,
            w.service_account
        )
    }

    /// The server-side mode of `w` receiving on `port`: its PeerAuthentication (or legacy
    /// Policy) chain over the install default.
    pub fn effective_mode(&self, w: &WorkloadEntry, port: u16) -> EffectiveMode {
        let workload = crate::policy::Workload {
            namespace: &w.namespace,
            labels: &w.labels,
        };
        self.options.effective_mode_with_legacy(
            &self.beta,
            &self.legacy,
            &workload,
            u32::from(port),
        )
    }

    /// The namespace-level mode auto mTLS reads (a namespace that takes plaintext only gets
    /// plaintext), from the API in use there.
    pub fn namespace_mode(&self, ns: &str) -> MtlsMode {
        let root = &self.options.root_namespace;
        // As the server side chooses (a v1beta1 policy for the namespace's workloads, or
        // a mesh-wide one, switches them to the v1beta1 API), so both sides agree.
        let beta_applies = self
            .beta
            .iter()
            .any(|p| p.namespace == ns || (&p.namespace == root && p.is_selectorless()));
        let set = if beta_applies {
            &self.beta
        } else {
            &self.legacy
        };
        namespace_mode(set, root, self.options.default_peer_mode(), ns)
    }

    /// The DestinationRule a client in `client_ns` uses for `host`: its own namespace's
    /// first, then the service's, then the root namespace's; in one namespace the most
    /// specific host wins, then the oldest. An index into `rules`.
    pub(crate) fn destination_rule(
        &self,
        client: &WorkloadEntry,
        svc: &ServiceEntry,
    ) -> Option<usize> {
        let client_ns = client.namespace.as_str();
        let mut namespaces = vec![client_ns, svc.namespace.as_str()];
        namespaces.push(self.options.root_namespace.as_str());
        let mut seen = BTreeSet::new();
        for ns in namespaces {
            if !seen.insert(ns) {
                continue;
            }
            let best = self
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.namespace == ns && visible(r, client_ns))
                // A rule with a workloadSelector is for the selected clients of its
                // own namespace only.
                .filter(|(_, r)| {
                    r.selector.as_ref().is_none_or(|sel| {
                        r.namespace == client_ns && tessera_model::meta::subset(sel, &client.labels)
                    })
                })
                .filter_map(|(i, r)| host_match(&r.host, &svc.host).map(|spec| (spec, i, r)))
                .min_by(|(sa, _, a), (sb, _, b)| sb.cmp(sa).then(a.created.cmp(&b.created)));
            if let Some((_, i, _)) = best {
                return Some(i);
            }
        }
        None
    }

    /// The DestinationRules with a workloadSelector that select `client`: with its
    /// namespace, all that makes one client's rules differ from another's.
    pub(crate) fn selector_rules(&self, client: &WorkloadEntry) -> Vec<usize> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.namespace == client.namespace
                    && r.selector
                        .as_ref()
                        .is_some_and(|sel| tessera_model::meta::subset(sel, &client.labels))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The DestinationRule that sets the client's TLS toward `svc:port` (port-level
    /// settings first), by name, with those settings; `None` leaves it to auto mTLS.
    pub fn tls_rule(
        &self,
        client: &WorkloadEntry,
        svc: &ServiceEntry,
        port: &ServicePortEntry,
    ) -> Option<(&str, ClientTlsSettings)> {
        self.rule_tls(self.destination_rule(client, svc)?, port)
    }

    /// What rule `rule` (an index from [`World::destination_rule`]) sets for `port`.
    pub(crate) fn rule_tls(
        &self,
        rule: usize,
        port: &ServicePortEntry,
    ) -> Option<(&str, ClientTlsSettings)> {
        let rule = &self.rules[rule];
        let tp = rule.traffic_policy.as_ref()?;
        let tls = tp
            .port_level_settings
            .iter()
            .find(|p| {
                p.port
                    .as_ref()
                    .is_some_and(|s| s.number == u32::from(port.port))
            })
            .and_then(|p| p.tls.clone())
            .or_else(|| tp.tls.clone())?;
        Some((rule.source.as_str(), tls))
    }
}

impl World {
    /// The Sidecar that applies to `w`: one selecting it in its namespace (oldest first),
    /// else its namespace's selector-less one.
    pub fn sidecar_for(&self, w: &WorkloadEntry) -> Option<&SidecarRule> {
        self.sidecar_index(w).map(|i| &self.sidecars[i])
    }

    /// [`World::sidecar_for`] as an index into `sidecars`.
    pub(crate) fn sidecar_index(&self, w: &WorkloadEntry) -> Option<usize> {
        let mut in_ns: Vec<(usize, &SidecarRule)> = self
            .sidecars
            .iter()
            .enumerate()
            .filter(|(_, s)| s.namespace == w.namespace)
            .collect();
        in_ns.sort_by_key(|(_, s)| s.created);
        in_ns
            .iter()
            .find(|(_, s)| {
                s.selector
                    .as_ref()
                    .is_some_and(|sel| tessera_model::meta::subset(sel, &w.labels))
            })
            .or_else(|| in_ns.iter().find(|(_, s)| s.selector.is_none()))
            .map(|(i, _)| *i)
    }
}

/// Short names resolve in the rule's namespace, as Istio does for DestinationRule hosts.
fn fqdn(host: &str, namespace: &str) -> String {
    if host == "*" || host.starts_with("*.") || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

/// How specifically `rule_host` names `host`: exact beats any wildcard, a longer wildcard
/// beats a shorter one; `None` when it does not match.
fn host_match(rule_host: &str, host: &str) -> Option<usize> {
    if rule_host == host {
        Some(usize::MAX)
    } else if rule_host == "*" {
        Some(0)
    } else if let Some(suffix) = rule_host.strip_prefix('*') {
        host.ends_with(suffix).then_some(suffix.len())
    } else {
        None
    }
}

/// `exportTo`: empty or `*` is everywhere, `.` is the rule's own namespace.
fn visible(rule: &DestinationRuleEntry, client_ns: &str) -> bool {
    rule.export_to.is_empty()
        || rule
            .export_to
            .iter()
            .any(|e| e == "*" || e == client_ns || (e == "." && rule.namespace == client_ns))
}

fn service_infos(reg: &Registry) -> Vec<ServiceInfo> {
    reg.services
        .iter()
        .map(|svc| {
            let container_ports = reg
                .members(svc)
                .flat_map(|w| {
                    w.named_ports
                        .iter()
                        .map(|(n, p)| (n.clone(), u32::from(*p)))
                })
                .collect();
            ServiceInfo {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                selector: svc.selector.clone(),
                ports: svc
                    .ports
                    .iter()
                    .map(|p| ServicePortInfo {
                        name: p.name.clone(),
                        port: u32::from(p.port),
                        target_port: match &p.target {
                            IntOrString::Int(n) => TargetPort::Number(*n as u32),
                            IntOrString::String(s) => TargetPort::Name(s.clone()),
                        },
                    })
                    .collect(),
                container_ports,
            }
        })
        .collect()
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "revision {}: {} services, {} workloads",
            self.revision,
            self.registry.services.len(),
            self.registry.workloads.len()
        )
    }
}

/// What the ≤1.5 installer created with global.mtls.enabled=true and auto off.
fn installed_mtls_rule(root: &str) -> DestinationRuleEntry {
    DestinationRuleEntry {
        namespace: root.to_string(),
        host: "*.local".into(),
        export_to: vec![],
        selector: None,
        created: (i64::MIN, 0),
        traffic_policy: Some(TrafficPolicy {
            tls: Some(ClientTlsSettings {
                mode: ClientTlsMode::IstioMutual,
                ..Default::default()
            }),
            ..Default::default()
        }),
        source: format!(
            "DestinationRule {root}/default for *.local (installed by values.global.mtls.enabled=true)"
        ),
    }
}
