//! The policy compiler: `(world, proxy) → ProxyConfig`, pure. It owns every rule of spec
//! §2–§3: effective PeerAuthentication modes with port-level overrides (beta and legacy
//! APIs), auto mTLS per endpoint, DestinationRule precedence, and the install options.
//! The proxy only looks the results up; `describe` prints the same reasons.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::policy::{
    ignored, namespace_mode, to_peer_authn, EffectiveMode, LegacyPolicy, MeshOptions, MtlsMode,
    PeerAuthn, PolicyRef, Protocol, ServiceInfo, ServicePortInfo, TargetPort,
};
use tessera_contract::config::{
    CertificateSource, Endpoint, EndpointTls, Inbound, InboundMode, InboundPort, Listeners, Node,
    PortProtocol, ProxyConfig, Service, ServicePort, TlsMode,
};
use tessera_model::istio::{ClientTlsMode, ClientTlsSettings, TrafficPolicy};
use tessera_model::{meta::IntOrString, Resource};

use crate::objects::Objects;
use crate::registry::{Registry, ServiceEntry, ServicePortEntry, WorkloadEntry, CLUSTER_DOMAIN};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("node id {0:?} is not of the form <pod>.<namespace>")]
    BadNodeId(String),
    #[error("no pod {pod} in namespace {namespace} (yet)")]
    UnknownPod { pod: String, namespace: String },
}

/// A DestinationRule as the compiler uses it.
#[derive(Debug, Clone)]
struct Rule {
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

/// Everything the compiler reads, derived once per store revision.
#[derive(Debug, Clone)]
pub struct World {
    pub revision: u64,
    pub options: MeshOptions,
    pub registry: Registry,
    beta: Vec<PeerAuthn>,
    legacy: Vec<PeerAuthn>,
    rules: Vec<Rule>,
    pub(crate) sidecars: Vec<crate::ingress::SidecarRule>,
    pub(crate) gateways: Vec<crate::gateway::GatewayRule>,
    pub(crate) virtual_services: Vec<crate::gateway::VirtualServiceRule>,
    /// Secrets by (namespace, name): their decoded data, for `credentialName`.
    pub(crate) secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    /// Policies (or parts) that cannot take effect, with why.
    pub problems: Vec<(PolicyRef, String)>,
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
        let mut secrets = BTreeMap::new();
        for s in objects.iter() {
            let created = s.created();
            match &s.resource {
                Resource::Sidecar(sc) => sidecars.push(crate::ingress::SidecarRule {
                    namespace: sc.metadata.namespace.clone().unwrap_or_default(),
                    name: sc.metadata.name.clone(),
                    selector: sc.spec.workload_selector.as_ref().map(|s| s.labels.clone()),
                    created,
                    ingress: sc.spec.ingress.clone(),
                }),
                Resource::Gateway(gw) => gateways.push(crate::gateway::GatewayRule {
                    namespace: gw.metadata.namespace.clone().unwrap_or_default(),
                    name: gw.metadata.name.clone(),
                    created,
                    spec: gw.spec.clone(),
                }),
                Resource::VirtualService(vs) => {
                    virtual_services.push(crate::gateway::VirtualServiceRule {
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
                        crate::gateway::secret_data(secret),
                    );
                }
                Resource::PeerAuthentication(pa) => beta.push(PeerAuthn::from_model(pa, created)),
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
                    rules.push(Rule {
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
            // What the ≤1.5 installer created with global.mtls.enabled=true and auto off.
            rules.push(Rule {
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
            });
        }
        let infos = service_infos(&registry);
        let (legacy, mut problems) = to_peer_authn(&legacy_policies, &infos);
        problems.extend(ignored(&beta, root));
        problems.sort();
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
            secrets,
            problems,
        }
    }

    fn trust_domain(&self) -> &str {
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

    /// The server-side mode of `w` receiving on `port` (§3.2, §3.3, §3.4).
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

    /// The namespace-level hint auto mTLS reads (§2.1 step A4), from the API in use there.
    fn namespace_mode(&self, ns: &str) -> MtlsMode {
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
    /// specific host wins, then the oldest.
    fn destination_rule(&self, client: &WorkloadEntry, svc: &ServiceEntry) -> Option<&Rule> {
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
                .filter(|r| r.namespace == ns && visible(r, client_ns))
                // A rule with a workloadSelector is for the selected clients of its
                // own namespace only.
                .filter(|r| {
                    r.selector.as_ref().is_none_or(|sel| {
                        r.namespace == client_ns && tessera_model::meta::subset(sel, &client.labels)
                    })
                })
                .filter_map(|r| host_match(&r.host, &svc.host).map(|spec| (spec, r)))
                .min_by(|(sa, a), (sb, b)| sb.cmp(sa).then(a.created.cmp(&b.created)));
            if let Some((_, r)) = best {
                return Some(r);
            }
        }
        None
    }

    /// The DestinationRule that sets the client's TLS toward `svc:port` (port-level
    /// settings first), by name, with those settings; `None` leaves it to auto mTLS.
    pub fn tls_rule(
        &self,
        client: &WorkloadEntry,
        svc: &ServiceEntry,
        port: &ServicePortEntry,
    ) -> Option<(&str, ClientTlsSettings)> {
        let rule = self.destination_rule(client, svc)?;
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

    /// The TLS a sidecar in `client_ns` originates to one endpoint (§2.1).
    pub fn endpoint_tls(
        &self,
        client: &WorkloadEntry,
        svc: &ServiceEntry,
        port: &ServicePortEntry,
        server: &WorkloadEntry,
        target_port: u16,
    ) -> EndpointTls {
        let identity = self.identity_of(server);
        if let Some((source, tls)) = self.tls_rule(client, svc, port) {
            let mut reason = format!(
                "{source} sets tls {} (auto mTLS does not apply)",
                client_mode_name(tls.mode)
            );
            if let Some(name) = &tls.credential_name {
                // Sidecars read files; credentialName is read by gateways.
                reason.push_str(&format!(
                    "; credentialName {name:?} is not read by sidecars, use the file fields"
                ));
            }
            return match tls.mode {
                ClientTlsMode::Disable => EndpointTls {
                    mode: TlsMode::Disable,
                    reason,
                    ..Default::default()
                },
                ClientTlsMode::IstioMutual => EndpointTls {
                    mode: TlsMode::IstioMutual,
                    subject_alt_names: if tls.subject_alt_names.is_empty() {
                        vec![identity]
                    } else {
                        tls.subject_alt_names.clone()
                    },
                    sni: tls.sni.clone(),
                    reason,
                    ..Default::default()
                },
                ClientTlsMode::Simple | ClientTlsMode::Mutual => EndpointTls {
                    mode: if tls.mode == ClientTlsMode::Simple {
                        TlsMode::Simple
                    } else {
                        TlsMode::Mutual
                    },
                    subject_alt_names: tls.subject_alt_names.clone(),
                    sni: tls.sni.clone(),
                    ca_certificates: tls.ca_certificates.as_ref().map(Into::into),
                    client_certificate: tls.client_certificate.as_ref().map(Into::into),
                    private_key: tls.private_key.as_ref().map(Into::into),
                    reason,
                },
            };
        }
        let plaintext = |reason: String| EndpointTls {
            mode: TlsMode::Disable,
            reason,
            ..Default::default()
        };
        if !self.options.auto_mtls {
            return plaintext(
                "auto mTLS is off (values.global.mtls.auto=false) and no DestinationRule sets tls"
                    .into(),
            );
        }
        let ns_mode = self.namespace_mode(&svc.namespace);
        if ns_mode == MtlsMode::Disable {
            return plaintext(format!(
                "auto mTLS: namespace {} accepts plaintext only (DISABLE)",
                svc.namespace
            ));
        }
        if !server.tls_mode_istio() {
            return plaintext(
                "auto mTLS: the endpoint has no sidecar (no security.istio.io/tlsMode=istio label)"
                    .into(),
            );
        }
        let mode = self.effective_mode(server, target_port);
        if mode.mode == MtlsMode::Disable {
            return plaintext(format!(
                "auto mTLS: the endpoint's port {target_port} is {mode}"
            ));
        }
        EndpointTls {
            mode: TlsMode::IstioMutual,
            subject_alt_names: vec![identity],
            reason: format!(
                "auto mTLS: the endpoint has a sidecar and its port {target_port} is {mode}"
            ),
            ..Default::default()
        }
    }
}

/// The proxy configuration of the pod `node_id` (`pod.namespace`) names.
pub fn compile(world: &World, node_id: &str) -> Result<ProxyConfig, CompileError> {
    let Some((pod, namespace)) = node_id.rsplit_once('.') else {
        return Err(CompileError::BadNodeId(node_id.to_string()));
    };
    if pod.is_empty() || namespace.is_empty() {
        return Err(CompileError::BadNodeId(node_id.to_string()));
    }
    let me = world
        .registry
        .workload(node_id)
        .ok_or_else(|| CompileError::UnknownPod {
            pod: pod.to_string(),
            namespace: namespace.to_string(),
        })?;
    // A gateway pod has no capture and no inbound side: its listeners are its servers.
    let (listeners, inbound, gateway) = if me.is_gateway {
        let g = crate::gateway::compile_gateway(world, me);
        (Listeners::default(), Inbound::default(), g)
    } else {
        let any = |port| Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
        let listeners = Listeners {
            outbound_capture: any(15001),
            inbound_capture: any(15006),
            explicit: vec![],
        };
        (listeners, inbound(world, me), Default::default())
    };
    Ok(ProxyConfig {
        version: world.revision.to_string(),
        node: Node {
            id: node_id.to_string(),
            identity: world.identity_of(me),
            trust_domain: world.trust_domain().to_string(),
        },
        certificates: CertificateSource::default(),
        admin: Default::default(),
        runtime: Default::default(),
        listeners,
        services: outbound(world, me),
        inbound,
        control_plane: None,
        volumes: Default::default(),
        gateway: gateway.listeners,
        secrets: gateway.secrets,
    })
}

fn outbound(world: &World, me: &WorkloadEntry) -> Vec<Service> {
    let reg = &world.registry;
    reg.services
        .iter()
        .map(|svc| Service {
            host: svc.host.clone(),
            vips: svc.cluster_ip.into_iter().collect(),
            ports: svc
                .ports
                .iter()
                .filter_map(|port| {
                    let protocol = port_protocol(port.protocol)?;
                    let mut endpoints: Vec<Endpoint> = reg
                        .endpoints(svc, port)
                        .map(|ep| Endpoint {
                            address: SocketAddr::new(ep.ip, ep.port),
                            workload: Some(ep.workload.id()),
                            tls: world.endpoint_tls(me, svc, port, ep.workload, ep.port),
                        })
                        .collect();
                    if svc.cluster_ip.is_none() {
                        headless_all_or_nothing(&mut endpoints);
                    }
                    Some(ServicePort {
                        port: port.port,
                        name: port.name.clone(),
                        protocol,
                        endpoints,
                    })
                })
                .collect(),
        })
        .collect()
}

fn inbound(world: &World, me: &WorkloadEntry) -> Inbound {
    let default = world.effective_mode(me, 0);
    if let Some(ports) = crate::ingress::sidecar_ports(world, me) {
        return Inbound {
            app_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            default_mode: inbound_mode(default.mode),
            ports,
        };
    }
    let mut ports: Vec<InboundPort> = Vec::new();
    let mut add = |port: u16, protocol: PortProtocol| {
        if ports.iter().any(|p| p.port == port) {
            return;
        }
        let mode = world.effective_mode(me, port);
        ports.push(InboundPort {
            port,
            protocol,
            mode: inbound_mode(mode.mode),
            reason: mode.to_string(),
            forward_to: None,
            tls: None,
            operation: None,
        });
    };
    for svc in world.registry.services_of(me) {
        for port in &svc.ports {
            let (Some(target), Some(protocol)) =
                (me.target_port(port), port_protocol(port.protocol))
            else {
                continue;
            };
            add(target, protocol);
        }
    }
    // Declared container ports outside any Service still get their own mode
    // (portLevelMtls may name them).
    for port in &me.container_ports {
        add(*port, PortProtocol::Auto);
    }
    ports.sort_by_key(|p| p.port);
    Inbound {
        app_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        default_mode: inbound_mode(default.mode),
        ports,
    }
}

/// §2.1 A6: a headless Service's connections go to the pod address directly, with no
/// per-endpoint choice: auto mTLS is mTLS for all only when every endpoint would get it.
fn headless_all_or_nothing(endpoints: &mut [Endpoint]) {
    let auto = |e: &Endpoint| e.tls.reason.starts_with("auto mTLS");
    if endpoints
        .iter()
        .all(|e| !auto(e) || e.tls.mode == TlsMode::IstioMutual)
    {
        return;
    }
    for e in endpoints
        .iter_mut()
        .filter(|e| auto(e) && e.tls.mode == TlsMode::IstioMutual)
    {
        e.tls = EndpointTls {
            mode: TlsMode::Disable,
            reason: "auto mTLS: a headless Service with an endpoint that cannot take mTLS gets plaintext to all its endpoints".into(),
            ..Default::default()
        };
    }
}

pub(crate) fn inbound_mode(m: MtlsMode) -> InboundMode {
    match m {
        MtlsMode::Strict => InboundMode::Strict,
        MtlsMode::Disable => InboundMode::Disable,
        MtlsMode::Permissive | MtlsMode::Unset => InboundMode::Permissive,
    }
}

/// The proxy's handling of a classified port; `None` for UDP (not proxied).
pub fn port_protocol(p: Protocol) -> Option<PortProtocol> {
    Some(match p {
        Protocol::Http | Protocol::HttpProxy | Protocol::GrpcWeb => PortProtocol::Http,
        Protocol::Http2 | Protocol::Grpc => PortProtocol::Http2,
        Protocol::Unsupported => PortProtocol::Auto,
        Protocol::Udp => return None,
        Protocol::Tcp
        | Protocol::Https
        | Protocol::Tls
        | Protocol::Mongo
        | Protocol::Redis
        | Protocol::Mysql => PortProtocol::Tcp,
    })
}

pub(crate) fn client_mode_name(m: ClientTlsMode) -> &'static str {
    match m {
        ClientTlsMode::Disable => "DISABLE",
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        ClientTlsMode::IstioMutual => "ISTIO_MUTUAL",
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
fn visible(rule: &Rule, client_ns: &str) -> bool {
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
                .workloads
                .iter()
                .filter(|w| svc.selects(w))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Op;

    fn world(manifests: &str) -> World {
        let report = tessera_model::load_str(
            std::path::Path::new("t.yaml"),
            manifests,
            &tessera_model::LoadOptions::default(),
        );
        assert!(!report.has_errors(), "{:?}", report.problems);
        let objects = Objects::default();
        let mut ops = objects.bootstrap_ops();
        ops.extend(report.documents.into_iter().map(|d| Op::Apply {
            origin: "t.yaml".into(),
            resource: d.resource,
        }));
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let objects = objects.plan(ops, now).unwrap().next;
        World::build(&objects, &MeshOptions::default())
    }

    fn pod(name: &str, app: &str, sidecar: bool, ip: &str) -> String {
        let (label, proxy) = if sidecar {
            (
                ", security.istio.io/tlsMode: istio",
                ", {name: istio-proxy, image: p}",
            )
        } else {
            ("", "")
        };
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}{label}}}}}\nspec:\n  containers: [{{name: app, image: a}}{proxy}]\nstatus: {{phase: Running, podIP: {ip}}}\n"
        )
    }

    fn modes(w: &World, host: &str) -> Vec<TlsMode> {
        let c = compile(w, "sleep.default").unwrap();
        let svc = c.services.iter().find(|s| s.host == host).unwrap();
        svc.ports[0].endpoints.iter().map(|e| e.tls.mode).collect()
    }

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports: [{port: 80, name: http}]\n";
    const HOST: &str = "db.default.svc.cluster.local";

    #[test]
    fn a_headless_service_is_all_mtls_or_all_plaintext() {
        let sleep = pod("sleep", "sleep", true, "10.244.0.2");
        let all = world(&format!(
            "{SVC}{sleep}{}{}",
            pod("db-1", "db", true, "10.244.0.3"),
            pod("db-2", "db", true, "10.244.0.4")
        ));
        assert_eq!(
            modes(&all, HOST),
            [TlsMode::IstioMutual, TlsMode::IstioMutual]
        );
        let mixed = world(&format!(
            "{SVC}{sleep}{}{}",
            pod("db-1", "db", true, "10.244.0.3"),
            pod("db-2", "db", false, "10.244.0.4")
        ));
        assert_eq!(modes(&mixed, HOST), [TlsMode::Disable, TlsMode::Disable]);
    }

    #[test]
    fn a_destination_rule_with_a_workload_selector_binds_only_the_selected_clients() {
        let base = format!(
            "{}{}{}",
            SVC.replace("clusterIP: None\n  ", ""),
            pod("sleep", "sleep", true, "10.244.0.2"),
            pod("db-1", "db", true, "10.244.0.3")
        );
        let dr = |app: &str| {
            format!("---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: db}}\nspec:\n  host: db\n  workloadSelector:\n    matchLabels: {{app: {app}}}\n  trafficPolicy:\n    tls: {{mode: DISABLE}}\n")
        };
        assert_eq!(
            modes(&world(&format!("{base}{}", dr("other"))), HOST),
            [TlsMode::IstioMutual]
        );
        assert_eq!(
            modes(&world(&format!("{base}{}", dr("sleep"))), HOST),
            [TlsMode::Disable]
        );
    }

    #[test]
    fn client_and_server_read_the_same_api_when_both_exist() {
        // A v1beta1 workload policy (STRICT) and a legacy namespace Policy without peers
        // (plaintext only): the workload runs the v1beta1 API, so the client must not
        // downgrade to plaintext because of the legacy namespace policy.
        let w = world(&format!(
            "{}{}{}---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: db}}\nspec:\n  selector: {{matchLabels: {{app: db}}}}\n  mtls: {{mode: STRICT}}\n---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {{name: default}}\nspec: {{}}\n",
            SVC.replace("clusterIP: None\n  ", ""),
            pod("sleep", "sleep", true, "10.244.0.2"),
            pod("db-1", "db", true, "10.244.0.3")
        ));
        let server = compile(&w, "db-1.default").unwrap();
        assert_eq!(server.inbound.ports[0].mode, InboundMode::Strict);
        assert_eq!(modes(&w, HOST), [TlsMode::IstioMutual]);
    }
}
