//! Who reaches what, and how: for a client workload and a service port, per endpoint,
//! the TLS the client will send and the server will take, the verdict, and the resources
//! that decided it. Both sides are read from [`compile`]'s output, the configuration the
//! proxies themselves run, so this view and the data path cannot disagree.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tessera_contract::config::{InboundMode, PortProtocol, ProxyConfig, TlsMode};

use crate::compile::compile;
use crate::insight::verdict::{decide, ClientSends, Hop, ServerTakes, Verdict};
use crate::policy::{EffectiveMode, Protocol};
use crate::registry::{ServiceEntry, ServicePortEntry, WorkloadEntry};
use crate::world::World;
use tessera_contract::inbound::PortRule;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    #[error("no pod {0} (use POD.NAMESPACE, or deploy/NAME.NAMESPACE)")]
    NoClient(String),
    #[error("{0} is a gateway: its traffic follows Gateway and VirtualService resources (see `tessera proxy-config secret` and the gateway's logs)")]
    GatewayClient(String),
    #[error("no service {0} (use NAME.NAMESPACE[:PORT])")]
    NoService(String),
    #[error("service {service} has no port {port} (it has {have})")]
    NoPort {
        service: String,
        port: u16,
        have: String,
    },
}

/// One endpoint of a service port, seen from one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointReach {
    /// `pod.namespace`.
    pub workload: String,
    /// The pod address and target port.
    pub address: String,
    pub target_port: u16,
    pub client_sends: ClientSends,
    /// Why the client sends that (auto mTLS, or the DestinationRule).
    pub client_reason: String,
    pub server_takes: ServerTakes,
    /// Why the port takes that (the effective mode's chain, or the Sidecar listener).
    pub server_reason: String,
    pub verdict: Verdict,
    pub why: String,
    /// What to change when the verdict is not what is wanted; empty when it works.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fix: String,
    /// The identity the server sees (mTLS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity: Option<String>,
    /// The identity the client's sidecar verifies (mTLS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_identity: Option<String>,
    /// The resources that decided, by kind and name (`PeerAuthentication full/httpbin`).
    pub decided_by: Vec<String>,
    /// What the server's AuthorizationPolicies decide for the modeled request (`GET
    /// /headers`, as the seeds' check sends it), when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
}

/// A client and one service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReach {
    /// `pod.namespace`.
    pub client: String,
    pub client_sidecar: bool,
    /// The client's SPIFFE identity (what its sidecar presents).
    pub client_identity: String,
    /// `name.namespace`.
    pub service: String,
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// `http`, `http2`, `tcp` or `auto` (sniffed by the client's sidecar).
    pub protocol: String,
    pub endpoints: Vec<EndpointReach>,
}

impl PortReach {
    /// The verdicts of the endpoints, each once.
    pub fn verdicts(&self) -> BTreeSet<Verdict> {
        self.endpoints.iter().map(|e| e.verdict).collect()
    }

    /// `httpbin.full:8000`.
    pub fn target(&self) -> String {
        format!("{}:{}", self.service, self.port)
    }
}

/// Compiled proxy configurations, each once per question.
struct Configs<'w> {
    world: &'w World,
    cache: BTreeMap<String, Option<ProxyConfig>>,
}

impl<'w> Configs<'w> {
    fn new(world: &'w World) -> Self {
        Configs {
            world,
            cache: BTreeMap::new(),
        }
    }

    fn of(&mut self, w: &WorkloadEntry) -> Option<&ProxyConfig> {
        let world = self.world;
        self.cache
            .entry(w.id())
            .or_insert_with(|| compile(world, &w.id()).ok())
            .as_ref()
    }
}

/// A pod by `pod.ns` (or `pod/pod.ns`), or the first pod a Deployment (or other
/// controller) owns by `deploy/NAME.ns`; a bare `NAME.ns` tries the pod, then the owner.
pub fn find_client<'w>(world: &'w World, name: &str) -> Result<&'w WorkloadEntry, ReachError> {
    let (by_pod, by_owner, id) = match name.split_once('/') {
        Some(("deploy" | "deployment" | "deployments", rest)) => (false, true, rest),
        Some(("pod" | "pods" | "po", rest)) => (true, false, rest),
        Some(_) => return Err(ReachError::NoClient(name.into())),
        None => (true, true, name),
    };
    let Some((pod, ns)) = id.rsplit_once('.') else {
        return Err(ReachError::NoClient(name.into()));
    };
    let in_ns = || {
        world
            .registry
            .workloads
            .iter()
            .filter(|w| w.namespace == ns)
    };
    let found = in_ns()
        .find(|w| by_pod && w.name == pod)
        .or_else(|| in_ns().find(|w| by_owner && w.owner.as_deref() == Some(pod)));
    let w = found.ok_or_else(|| ReachError::NoClient(name.into()))?;
    if w.is_gateway {
        return Err(ReachError::GatewayClient(w.id()));
    }
    Ok(w)
}

/// A service by `name.ns`, `name.ns.svc[.cluster.local]` or its host.
pub fn find_service<'w>(world: &'w World, name: &str) -> Result<&'w ServiceEntry, ReachError> {
    let mut parts = name.split('.');
    let (Some(svc), Some(ns)) = (parts.next(), parts.next()) else {
        return Err(ReachError::NoService(name.into()));
    };
    world
        .registry
        .services
        .iter()
        .find(|s| s.name == svc && s.namespace == ns)
        .ok_or_else(|| ReachError::NoService(name.into()))
}

/// `tessera explain FROM TO[:PORT]`: every port (or the one named) of the service, from
/// the client.
pub fn explain(
    world: &World,
    client: &WorkloadEntry,
    svc: &ServiceEntry,
    port: Option<u16>,
) -> Result<Vec<PortReach>, ReachError> {
    let ports: Vec<&ServicePortEntry> = match port {
        None => svc.ports.iter().collect(),
        Some(p) => {
            let found: Vec<&ServicePortEntry> = svc.ports.iter().filter(|e| e.port == p).collect();
            if found.is_empty() {
                let have: Vec<String> = svc.ports.iter().map(|e| e.port.to_string()).collect();
                return Err(ReachError::NoPort {
                    service: format!("{}.{}", svc.name, svc.namespace),
                    port: p,
                    have: have.join(", "),
                });
            }
            found
        }
    };
    let mut configs = Configs::new(world);
    Ok(ports
        .into_iter()
        .filter_map(|p| port_reach(&mut configs, client, svc, p))
        .collect())
}

/// The namespaces a matrix covers when none are named: all but the mesh's own.
pub fn default_namespaces(world: &World) -> Vec<String> {
    let mut all: BTreeSet<String> = world.registry.namespaces.keys().cloned().collect();
    all.extend(world.registry.workloads.iter().map(|w| w.namespace.clone()));
    all.extend(world.registry.services.iter().map(|s| s.namespace.clone()));
    all.into_iter()
        .filter(|ns| *ns != world.options.root_namespace && ns != "kube-system")
        .collect()
}

/// Every client workload × service port of `namespaces` (all but the mesh's own when
/// empty): clients are running non-gateway pods, services those with an endpoint that
/// is not a gateway.
pub fn matrix(world: &World, namespaces: &[String]) -> Vec<PortReach> {
    let namespaces: BTreeSet<String> = if namespaces.is_empty() {
        default_namespaces(world).into_iter().collect()
    } else {
        namespaces.iter().cloned().collect()
    };
    let clients = world
        .registry
        .workloads
        .iter()
        .filter(|w| namespaces.contains(&w.namespace) && !w.is_gateway && w.ip.is_some());
    let services: Vec<&ServiceEntry> = world
        .registry
        .services
        .iter()
        .filter(|s| namespaces.contains(&s.namespace))
        .filter(|s| {
            world
                .registry
                .workloads
                .iter()
                .any(|w| s.selects(w) && !w.is_gateway && w.ip.is_some())
        })
        .collect();
    let mut configs = Configs::new(world);
    let mut out = Vec::new();
    for client in clients {
        for svc in &services {
            for port in &svc.ports {
                if let Some(r) = port_reach(&mut configs, client, svc, port) {
                    out.push(r);
                }
            }
        }
    }
    out
}

/// A port no Service declares: sniffed, with the workload's mode.
fn undeclared(mode: InboundMode) -> PortRule {
    PortRule {
        protocol: PortProtocol::Auto,
        mode,
        user_tls: false,
    }
}

fn protocol_name(p: PortProtocol) -> &'static str {
    match p {
        PortProtocol::Http => "http",
        PortProtocol::Http2 => "http2",
        PortProtocol::Tcp => "tcp",
        PortProtocol::Auto => "auto",
    }
}

/// `None` for ports no proxy handles (UDP).
fn port_reach(
    configs: &mut Configs<'_>,
    client: &WorkloadEntry,
    svc: &ServiceEntry,
    port: &ServicePortEntry,
) -> Option<PortReach> {
    let world = configs.world;
    let protocol = crate::compile::port_protocol(port.protocol)?;
    // The client's sidecar, when it has one: what it was told per endpoint.
    let client_port = client_view(configs, client, svc, port)?;
    // An auto port is sniffed: HTTP requests (what the matrix models) are handled as HTTP.
    let http = protocol != PortProtocol::Tcp;
    let mut endpoints = Vec::new();
    for ep in world.registry.endpoints(svc, port) {
        if ep.workload.is_gateway {
            continue;
        }
        let Some((client_sends, client_reason)) = client_side(&client_port, ep.workload) else {
            continue;
        };
        let effective = world.effective_mode(ep.workload, ep.port);
        let server = server_side(configs, ep.workload, ep.port, &effective);
        let (server_takes, server_reason, server_rule, sidecar_rule) =
            (server.takes, server.reason, server.rule, server.sidecar);
        let hop = Hop {
            client: client_sends,
            client_http: http,
            server: server_rule,
            app_tls: matches!(port.protocol, Protocol::Https | Protocol::Tls),
        };
        let (verdict, why) = decide(&hop);
        let mut why = why.to_string();
        let mut decided_by = decided_by(
            world,
            client,
            svc,
            port,
            ep.workload,
            &effective,
            sidecar_rule,
        );
        // A hop that gets through is then up to the server's AuthorizationPolicies.
        let authorization = if verdict.works() {
            authorized(
                configs,
                client,
                ep.workload,
                ep.ip,
                ep.port,
                verdict,
                http,
                svc,
                port.port,
            )
        } else {
            None
        };
        let verdict = denied_verdict(
            verdict,
            authorization.as_ref(),
            http,
            &mut why,
            &mut decided_by,
        );
        let fix = match &authorization {
            Some(a) if !a.allowed => denied_fix(world, client, ep.workload, a),
            _ => fix(
                client,
                ep.workload,
                ep.port,
                client_sends,
                server_takes,
                verdict,
                &decided_by,
            ),
        };
        let mtls = verdict == Verdict::Mtls;
        endpoints.push(EndpointReach {
            workload: ep.workload.id(),
            address: format!("{}:{}", ep.ip, ep.port),
            target_port: ep.port,
            client_sends,
            client_reason,
            server_takes,
            server_reason,
            verdict,
            why,
            fix,
            client_identity: mtls.then(|| world.identity_of(client)),
            server_identity: mtls.then(|| world.identity_of(ep.workload)),
            decided_by,
            authorization: authorization.map(|a| a.reason),
        });
    }
    Some(PortReach {
        client: client.id(),
        client_sidecar: client.has_sidecar,
        client_identity: world.identity_of(client),
        service: format!("{}.{}", svc.name, svc.namespace),
        host: svc.host.clone(),
        port: port.port,
        port_name: port.name.clone(),
        protocol: protocol_name(protocol).to_string(),
        endpoints,
    })
}

/// The verdict once the server's AuthorizationPolicies have decided: a denied HTTP request
/// gets 403, a denied TCP connection is closed; the denial says why and who decided.
fn denied_verdict(
    verdict: Verdict,
    authorization: Option<&Authorized>,
    http: bool,
    why: &mut String,
    decided_by: &mut Vec<String>,
) -> Verdict {
    let Some(a) = authorization.filter(|a| !a.allowed) else {
        return verdict;
    };
    *why = a.reason.clone();
    if let Some(policy) = a.policy.as_ref().or(a.first_allow.as_ref()) {
        // The policy decides, not the mTLS defaults the hop went through.
        decided_by.retain(|d| !d.starts_with("mesh defaults"));
        decided_by.push(format!("AuthorizationPolicy {policy}"));
    }
    if http {
        Verdict::Denied
    } else {
        Verdict::Refused
    }
}

/// What the client sends toward `server`'s endpoint (and why): its sidecar's TLS for it,
/// or plaintext without a sidecar; `None` when its sidecar does not know the endpoint.
fn client_side(client: &ClientView, server: &WorkloadEntry) -> Option<(ClientSends, String)> {
    let p = match client {
        ClientView::NoSidecar => {
            return Some((
                ClientSends::AppPlaintext,
                "the client has no sidecar".to_string(),
            ))
        }
        // Passed through at the connection level: what the app sends, as with no sidecar.
        ClientView::NotImported(why) => return Some((ClientSends::AppPlaintext, why.clone())),
        ClientView::Given(p) => p,
    };
    let e = p
        .endpoints
        .iter()
        .find(|e| e.workload.as_deref() == Some(server.id().as_str()))?;
    let sends = match e.tls.mode {
        TlsMode::Disable => ClientSends::Plaintext,
        TlsMode::IstioMutual => ClientSends::MeshMtls,
        TlsMode::Simple | TlsMode::Mutual => ClientSends::UserTls,
    };
    Some((sends, e.tls.reason.clone()))
}

/// What the client's side knows of `svc`'s `port`; `None` when its sidecar is not given it
/// and no Sidecar resource scopes it out (nothing to say).
fn client_view(
    configs: &mut Configs<'_>,
    client: &WorkloadEntry,
    svc: &ServiceEntry,
    port: &ServicePortEntry,
) -> Option<ClientView> {
    if !client.has_sidecar {
        return Some(ClientView::NoSidecar);
    }
    let world = configs.world;
    let config = configs.of(client)?;
    let given = config
        .services
        .iter()
        .find(|s| s.host == svc.host)
        .and_then(|s| s.ports.iter().find(|p| p.port == port.port));
    match (given, world.sidecar_for(client)) {
        (Some(p), _) => Some(ClientView::Given(p.clone())),
        // The proxy passes what it was not given through, as the app sent it.
        (None, Some(sc)) if !sc.egress.is_empty() => Some(ClientView::NotImported(format!(
            "Sidecar {}/{} does not import {}:{} (egress hosts); the sidecar passes the connection through as the app sent it",
            sc.namespace, sc.name, svc.host, port.port
        ))),
        (None, _) => None,
    }
}

/// What the client's side knows of one service port.
enum ClientView {
    /// No sidecar: the app's own bytes.
    NoSidecar,
    /// The sidecar's Sidecar resource does not import it: passed through, why.
    NotImported(String),
    /// What the sidecar was given.
    Given(tessera_contract::config::ServicePort),
}

/// What to change when an AuthorizationPolicy denies the hop.
fn denied_fix(
    world: &World,
    client: &WorkloadEntry,
    server: &WorkloadEntry,
    a: &Authorized,
) -> String {
    let who = if client.has_sidecar {
        format!(
            "principal {}",
            world.identity_of(client).trim_start_matches("spiffe://")
        )
    } else {
        format!(
            "{} (plaintext: no principal; a sidecar would give it one)",
            client.id()
        )
    };
    match &a.policy {
        Some(p) => format!(
            "the DENY rule of AuthorizationPolicy {p} matches; narrow it, or call {} otherwise",
            server.id()
        ),
        None => format!(
            "no ALLOW rule of {}'s AuthorizationPolicies admits {who}: add one",
            server.id()
        ),
    }
}

/// What the server's AuthorizationPolicies decide.
struct Authorized {
    allowed: bool,
    reason: String,
    /// The policy whose rule decided, when one did.
    policy: Option<String>,
    /// The first ALLOW policy that applies (which denies when no rule matches).
    first_allow: Option<String>,
}

/// The server's compiled AuthorizationPolicies on the modeled request from `client`
/// (`GET /headers`, or a TCP connection on a TCP port), decided by the function its
/// sidecar runs; `None` when it has none.
#[allow(clippy::too_many_arguments)]
fn authorized(
    configs: &mut Configs<'_>,
    client: &WorkloadEntry,
    server: &WorkloadEntry,
    server_ip: std::net::IpAddr,
    target_port: u16,
    verdict: Verdict,
    http: bool,
    svc: &ServiceEntry,
    service_port: u16,
) -> Option<Authorized> {
    use tessera_contract::authz::{evaluate, Attributes, HttpAttributes};
    if !server.has_sidecar {
        return None;
    }
    let world = configs.world;
    let identity = (verdict == Verdict::Mtls).then(|| world.identity_of(client));
    let authz = &configs.of(server)?.authorization;
    if authz.is_empty() {
        return None;
    }
    let source = client
        .ip
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let host = format!("{}.{}:{service_port}", svc.name, svc.namespace);
    let headers: Vec<(String, String)> = Vec::new();
    let request = Attributes {
        source_ip: source,
        remote_ip: source,
        principal: identity
            .as_deref()
            .map(|id| id.strip_prefix("spiffe://").unwrap_or(id)),
        destination_ip: server_ip,
        destination_port: target_port,
        sni: None,
        http: http.then_some(HttpAttributes {
            method: "GET",
            path: "/headers",
            host: &host,
            headers: &headers,
        }),
    };
    let decided = evaluate(authz, &request);
    Some(Authorized {
        allowed: decided.allowed,
        reason: decided.reason(),
        policy: decided.by.map(|m| m.policy.to_string()),
        first_allow: decided.allow_policies.0.map(str::to_string),
    })
}

/// What an endpoint's port takes, as its sidecar is configured.
struct ServerSide {
    takes: ServerTakes,
    reason: String,
    /// The port as the inbound decision reads it; `None` without a sidecar.
    rule: Option<PortRule>,
    /// The Sidecar resource whose ingress listener serves the port.
    sidecar: Option<String>,
}

fn server_side(
    configs: &mut Configs<'_>,
    server: &WorkloadEntry,
    port: u16,
    effective: &EffectiveMode,
) -> ServerSide {
    if !server.has_sidecar {
        return ServerSide {
            takes: ServerTakes::NoSidecar,
            reason: "the endpoint has no sidecar".to_string(),
            rule: None,
            sidecar: None,
        };
    }
    let world = configs.world;
    let inbound = configs.of(server).map(|c| c.inbound.clone());
    let declared = inbound
        .as_ref()
        .and_then(|i| i.ports.iter().find(|p| p.port == port).cloned());
    let (rule, reason) = match (&declared, &inbound) {
        (Some(p), _) => (PortRule::of(p), p.reason.clone()),
        (None, Some(i)) => (
            undeclared(i.default_mode),
            format!("{effective} (port {port} is not declared)"),
        ),
        (None, None) => (undeclared(InboundMode::Permissive), effective.to_string()),
    };
    let takes = match (rule.user_tls, rule.mode) {
        (true, _) => ServerTakes::UserTls,
        (false, InboundMode::Strict) => ServerTakes::Strict,
        (false, InboundMode::Permissive) => ServerTakes::Permissive,
        (false, InboundMode::Disable) => ServerTakes::Disable,
    };
    let sidecar = declared
        .as_ref()
        .and_then(|p| p.operation.as_ref())
        .and_then(|_| world.sidecar_for(server))
        .map(|s| format!("Sidecar {}/{}", s.namespace, s.name));
    ServerSide {
        takes,
        reason,
        rule: Some(rule),
        sidecar,
    }
}

/// The resources that decided a hop, by kind and name, each once: the client's
/// DestinationRule, the server's policy chain, the Sidecar listener.
fn decided_by(
    world: &World,
    client: &WorkloadEntry,
    svc: &ServiceEntry,
    port: &ServicePortEntry,
    server: &WorkloadEntry,
    effective: &EffectiveMode,
    sidecar: Option<String>,
) -> Vec<String> {
    let mut decided_by: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !decided_by.contains(&s) {
            decided_by.push(s);
        }
    };
    if client.has_sidecar {
        if let Some((source, _)) = world.tls_rule(client, svc, port) {
            add(source.to_string());
        }
    }
    if server.has_sidecar {
        for d in &effective.decided_by {
            if let Some(src) = &d.source {
                add(src.to_string());
            }
        }
    }
    if let Some(rule) = sidecar {
        add(rule);
    }
    if decided_by.is_empty() {
        decided_by.push(if server.has_sidecar || client.has_sidecar {
            "mesh defaults (no policy)".to_string()
        } else {
            "no sidecar on either side".to_string()
        });
    }
    decided_by
}

/// What an operator changes to make a failing hop work, naming the resources.
fn fix(
    client: &WorkloadEntry,
    server: &WorkloadEntry,
    port: u16,
    sends: ClientSends,
    takes: ServerTakes,
    verdict: Verdict,
    decided_by: &[String],
) -> String {
    if verdict.works() {
        return String::new();
    }
    let rule = decided_by
        .iter()
        .find(|d| d.starts_with("DestinationRule"))
        .cloned()
        .unwrap_or_else(|| "the DestinationRule".into());
    let policy = decided_by
        .iter()
        .find(|d| !d.starts_with("DestinationRule") && !d.starts_with("Sidecar"))
        .cloned();
    let server_name = server.id();
    match (sends, takes) {
        (ClientSends::AppPlaintext, ServerTakes::Strict) => format!(
            "inject a sidecar into {} (kube-inject), or make port {port} of {server_name} PERMISSIVE{} until every client has one",
            client.id(),
            policy.map_or(String::new(), |p| format!(" ({p})"))
        ),
        (ClientSends::Plaintext, ServerTakes::Strict) => format!(
            "remove tls mode DISABLE from {rule} (auto mTLS then sends mTLS), or make port {port} of {server_name} PERMISSIVE"
        ),
        (ClientSends::MeshMtls, ServerTakes::Disable) => format!(
            "remove tls from {rule} so auto mTLS follows the server, or make port {port} of {server_name} PERMISSIVE{}",
            policy.map_or(String::new(), |p| format!(" (now {p})"))
        ),
        (ClientSends::MeshMtls, ServerTakes::NoSidecar) => format!(
            "inject a sidecar into {server_name}, or remove tls ISTIO_MUTUAL from {rule} (auto mTLS sends plaintext to pods without one)"
        ),
        (ClientSends::MeshMtls | ClientSends::Plaintext | ClientSends::AppPlaintext, ServerTakes::UserTls) => format!(
            "port {port} of {server_name} takes the user's TLS only: clients must originate TLS with a certificate its Sidecar trusts"
        ),
        (ClientSends::UserTls, ServerTakes::Strict) => format!(
            "use tls mode ISTIO_MUTUAL (or no tls) in {rule} for in-mesh servers, or make port {port} of {server_name} PERMISSIVE"
        ),
        (ClientSends::UserTls, _) => format!(
            "use tls mode ISTIO_MUTUAL (or no tls) in {rule} for in-mesh servers, or name the Service port https or tls if the app on port {port} of {server_name} terminates TLS itself"
        ),
        _ => String::new(),
    }
}
