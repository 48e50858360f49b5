//! Gateway mode: the Gateways that select a gateway pod and the
//! VirtualServices bound to them, compiled into listeners per pod port, filter chains per
//! server (SNI names, TLS from files or `credentialName` Secrets) and route tables. Pure.

use std::collections::BTreeMap;

use tessera_contract::config::{
    CaBundleSource, GatewayListener, GatewayServer, HttpRouteRule, KeyPairSource, L4Route,
    RequestMatch, RetryPolicy, RouteAction, SecretMaterial, ServerKind, ServerTls, TerminationMode,
    ValueMatch, VirtualHost, WeightedDestination,
};
use tessera_model::istio::{
    HttpMatchRequest, HttpRoute, Server, ServerTlsMode as ApiMode, StringMatch,
};

use super::version;
use crate::policy::{classify, Protocol};
use crate::registry::{WorkloadEntry, CLUSTER_DOMAIN};
use crate::world::{GatewayRule, VirtualServiceRule, World};

/// The listeners and Secret material of gateway pod `me`, and notes on servers and
/// routes that could not be used (for logs and `describe`).
#[derive(Debug, Default)]
pub struct Compiled {
    pub listeners: Vec<GatewayListener>,
    pub secrets: Vec<SecretMaterial>,
    pub notes: Vec<String>,
}

pub fn compile_gateway(world: &World, me: &WorkloadEntry) -> Compiled {
    let mut out = Compiled::default();
    let mut gateways: Vec<&GatewayRule> = world
        .gateways
        .iter()
        .filter(|g| tessera_model::meta::subset(&g.spec.selector, &me.labels))
        .collect();
    gateways.sort_by_key(|g| g.created);
    // (pod port) → listener under construction, with the hosts already taken.
    let mut by_port: BTreeMap<u16, (GatewayListener, Vec<String>)> = BTreeMap::new();
    for gw in gateways {
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let Ok(number) = u16::try_from(server.port.number) else {
                continue;
            };
            let pod_port = target_port(world, me, number);
            let source = format!("Gateway {}/{} servers[{i}]", gw.namespace, gw.name);
            let (listener, taken) = by_port.entry(pod_port).or_insert_with(|| {
                (
                    GatewayListener {
                        port: pod_port,
                        server_port: number,
                        servers: vec![],
                    },
                    vec![],
                )
            });
            let hosts: Vec<String> = server
                .hosts
                .iter()
                .map(|h| strip_ns(h).to_string())
                .collect();
            let dup: Vec<&String> = hosts.iter().filter(|h| taken.contains(h)).collect();
            if !dup.is_empty() {
                out.notes.push(format!(
                    "{source} skipped: duplicate host names on port {number}: {dup:?}"
                ));
                continue;
            }
            match build_server(world, me, gw, server, &source, &mut out) {
                Some(built) => {
                    let plaintext = built.kind == ServerKind::Http;
                    if listener
                        .servers
                        .iter()
                        .any(|s| (s.kind == ServerKind::Http) != plaintext)
                    {
                        out.notes.push(format!(
                            "{source} skipped: port {number} mixes plaintext HTTP and TLS servers"
                        ));
                        continue;
                    }
                    taken.extend(hosts);
                    merge(listener, built);
                }
                None => continue,
            }
        }
    }
    out.listeners = by_port.into_values().map(|(l, _)| l).collect();
    out.secrets.sort_by(|a, b| a.name.cmp(&b.name));
    out.secrets.dedup_by(|a, b| a.name == b.name);
    out
}

/// Plain HTTP servers of one port share one route table (`http.<port>`).
fn merge(listener: &mut GatewayListener, server: GatewayServer) {
    if server.kind == ServerKind::Http {
        if let Some(existing) = listener
            .servers
            .iter_mut()
            .find(|s| s.kind == ServerKind::Http)
        {
            for vh in server.virtual_hosts {
                match existing
                    .virtual_hosts
                    .iter_mut()
                    .find(|v| v.domains == vh.domains)
                {
                    Some(v) => v.routes.extend(vh.routes),
                    None => existing.virtual_hosts.push(vh),
                }
            }
            return;
        }
    }
    listener.servers.push(server);
}

/// The pod port for a server port: the gateway Service's targetPort (80→8080, 443→8443
/// in the default install), else the number itself.
fn target_port(world: &World, me: &WorkloadEntry, number: u16) -> u16 {
    world
        .registry
        .services_of(me)
        .flat_map(|s| &s.ports)
        .find(|p| p.port == number)
        .and_then(|p| me.target_port(p))
        .unwrap_or(number)
}

fn strip_ns(host: &str) -> &str {
    host.split_once('/').map_or(host, |(_, h)| h)
}

/// Whether a VirtualService in `vs_ns` may attach to a server host written `[ns/]host`.
fn namespace_allows(server_host: &str, gw_ns: &str, vs_ns: &str) -> bool {
    match server_host.split_once('/') {
        None | Some(("*", _)) => true,
        Some((".", _)) => vs_ns == gw_ns,
        Some((ns, _)) => vs_ns == ns,
    }
}

/// `*` and `*.suffix` wildcards; exact names compare case-insensitively.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => false,
    }
}

/// The hosts a VirtualService host and a server host have in common (a wildcard on either
/// side narrows to the other).
fn intersect(vs_host: &str, server_host: &str) -> Option<String> {
    if host_matches(server_host, vs_host) {
        Some(vs_host.to_ascii_lowercase())
    } else if host_matches(vs_host, server_host) {
        Some(server_host.to_ascii_lowercase())
    } else {
        None
    }
}

fn build_server(
    world: &World,
    me: &WorkloadEntry,
    gw: &GatewayRule,
    server: &Server,
    source: &str,
    out: &mut Compiled,
) -> Option<GatewayServer> {
    let number = server.port.number as u16;
    let protocol = classify(Some(&server.port.protocol), None, None, u32::from(number));
    let tls_mode = server.tls.as_ref().map(|t| t.effective_mode());
    let port_name = &server.port.name;
    let kind = match (protocol, tls_mode) {
        (Protocol::Http | Protocol::Http2 | Protocol::Grpc, _) => ServerKind::Http,
        (Protocol::Https | Protocol::Tls, Some(ApiMode::Passthrough)) => ServerKind::Passthrough,
        (Protocol::Https | Protocol::Tls, Some(ApiMode::AutoPassthrough)) => {
            out.notes.push(format!(
                "{source} skipped: AUTO_PASSTHROUGH (multi-network east-west) is not served"
            ));
            return None;
        }
        (Protocol::Https, Some(_)) => ServerKind::TerminateHttp,
        (Protocol::Tls, Some(_)) => ServerKind::TerminateTcp,
        (Protocol::Tcp, _) => ServerKind::Tcp,
        (p, _) => {
            out.notes.push(format!(
                "{source} skipped: protocol {p} is not served by a gateway here"
            ));
            return None;
        }
    };
    let name = if kind == ServerKind::Http {
        format!("http.{number}")
    } else {
        format!("https.{number}.{port_name}.{}.{}", gw.name, gw.namespace)
    };
    let tls = match kind {
        ServerKind::TerminateHttp | ServerKind::TerminateTcp => {
            let settings = server.tls.as_ref()?;
            match server_tls(world, me, settings, out) {
                Ok(t) => Some(t),
                Err(why) => {
                    out.notes.push(format!("{source} skipped: {why}"));
                    return None;
                }
            }
        }
        _ => None,
    };
    let server_names = match kind {
        ServerKind::TerminateHttp | ServerKind::TerminateTcp => {
            let hosts: Vec<String> = server
                .hosts
                .iter()
                .map(|h| strip_ns(h).to_ascii_lowercase())
                .collect();
            if hosts.iter().any(|h| h == "*") {
                vec![]
            } else {
                hosts
            }
        }
        _ => vec![],
    };
    let https_redirect =
        kind == ServerKind::Http && server.tls.as_ref().is_some_and(|t| t.https_redirect);
    let bound: Vec<&VirtualServiceRule> = bound_services(world, gw);
    let mut built = GatewayServer {
        name,
        source: source.to_string(),
        kind,
        server_names,
        tls,
        virtual_hosts: vec![],
        l4_routes: vec![],
    };
    match kind {
        ServerKind::Http | ServerKind::TerminateHttp => {
            built.virtual_hosts =
                virtual_hosts(world, gw, server, &bound, number, https_redirect, me);
        }
        ServerKind::Passthrough => {
            built.l4_routes = tls_routes(world, gw, server, &bound, number);
            built.server_names = built
                .l4_routes
                .iter()
                .flat_map(|r| r.sni_hosts.clone())
                .collect();
            if built.l4_routes.is_empty() {
                out.notes.push(format!(
                    "{source}: PASSTHROUGH without a VirtualService tls route for its hosts; connections are reset"
                ));
                return None;
            }
        }
        ServerKind::TerminateTcp | ServerKind::Tcp => {
            built.l4_routes = tcp_routes(world, gw, &bound, number);
        }
    }
    Some(built)
}

/// VirtualServices naming `gw` in `gateways`, oldest first.
fn bound_services<'a>(world: &'a World, gw: &GatewayRule) -> Vec<&'a VirtualServiceRule> {
    let mut out: Vec<&VirtualServiceRule> = world
        .virtual_services
        .iter()
        .filter(|vs| names_gateway(&vs.spec.gateways, &vs.namespace, gw))
        .collect();
    out.sort_by_key(|v| v.created);
    out
}

/// `gateways` entries are `<name>` (in the VirtualService's namespace) or `<ns>/<name>`.
fn names_gateway(list: &[String], vs_ns: &str, gw: &GatewayRule) -> bool {
    list.iter().any(|g| match g.split_once('/') {
        Some((ns, name)) => ns == gw.namespace && name == gw.name,
        None => g == &gw.name && vs_ns == gw.namespace,
    })
}

fn virtual_hosts(
    world: &World,
    gw: &GatewayRule,
    server: &Server,
    bound: &[&VirtualServiceRule],
    number: u16,
    https_redirect: bool,
    me: &WorkloadEntry,
) -> Vec<VirtualHost> {
    let mut hosts: Vec<VirtualHost> = Vec::new();
    for vs in bound {
        for vs_host in &vs.spec.hosts {
            for server_host in &server.hosts {
                if !namespace_allows(server_host, &gw.namespace, &vs.namespace) {
                    continue;
                }
                let Some(domain) = intersect(vs_host, strip_ns(server_host)) else {
                    continue;
                };
                let routes = vs_routes(world, vs, gw, number, me);
                match hosts.iter_mut().find(|v| v.domains == [domain.clone()]) {
                    Some(v) => v.routes.extend(routes),
                    None => hosts.push(VirtualHost {
                        domains: vec![domain],
                        routes,
                        https_redirect,
                    }),
                }
            }
        }
    }
    if https_redirect {
        // The redirect applies to the server's hosts even without a VirtualService.
        for h in &server.hosts {
            let d = strip_ns(h).to_ascii_lowercase();
            if !hosts.iter().any(|v| v.domains == [d.clone()]) {
                hosts.push(VirtualHost {
                    domains: vec![d],
                    routes: vec![],
                    https_redirect: true,
                });
            }
        }
    }
    for v in &mut hosts {
        // Catch-all routes move last, as Istio sorts them.
        v.routes.sort_by_key(is_catch_all);
    }
    hosts
}

/// A VirtualService's HTTP routes that apply to this gateway and port, in order. Routes
/// are tried in order, so none after one that matches every request is ever used: the
/// list ends there, as Istio's does.
fn vs_routes(
    world: &World,
    vs: &VirtualServiceRule,
    gw: &GatewayRule,
    number: u16,
    me: &WorkloadEntry,
) -> Vec<HttpRouteRule> {
    let mut routes = Vec::new();
    for (i, r) in vs.spec.http.iter().enumerate() {
        let Some(rule) = http_rule(world, vs, i, r, gw, number, me) else {
            continue;
        };
        let last = is_catch_all(&rule);
        routes.push(rule);
        if last {
            break;
        }
    }
    routes
}

/// A rule without matches, or with a match on nothing but the path `/` (any path: no
/// match, prefix `/` or regex `.*`).
fn is_catch_all(rule: &HttpRouteRule) -> bool {
    rule.matches.is_empty()
        || rule.matches.iter().any(|m| {
            let any_path = match &m.uri {
                None => true,
                Some(ValueMatch::Prefix(p)) => p == "/",
                Some(ValueMatch::Regex(r)) => r == ".*",
                Some(_) => false,
            };
            any_path
                && m.method.is_none()
                && m.authority.is_none()
                && m.scheme.is_none()
                && m.headers.is_empty()
                && m.without_headers.is_empty()
                && m.query_params.is_empty()
        })
}

/// Short names resolve in the VirtualService's namespace.
fn service_host(host: &str, namespace: &str) -> String {
    if host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

/// `host:port` of a destination: the named port, else the service's only port.
fn destination(world: &World, vs_ns: &str, d: &tessera_model::istio::Destination) -> String {
    let host = service_host(&d.host, vs_ns);
    let port = d.port.as_ref().map(|p| p.number as u16).or_else(|| {
        let svc = world.registry.services.iter().find(|s| s.host == host)?;
        (svc.ports.len() == 1).then(|| svc.ports[0].port)
    });
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

fn weighted(
    world: &World,
    vs_ns: &str,
    dests: &[(Option<&tessera_model::istio::Destination>, Option<i32>)],
) -> Vec<WeightedDestination> {
    let all_unset = dests.iter().all(|(_, w)| w.unwrap_or(0) == 0);
    dests
        .iter()
        .filter_map(|(d, w)| {
            Some(WeightedDestination {
                service: destination(world, vs_ns, (*d)?),
                weight: if all_unset {
                    1
                } else {
                    w.unwrap_or(0).max(0) as u32
                },
            })
        })
        .collect()
}

fn value_match(m: &StringMatch) -> Option<ValueMatch> {
    if let Some(v) = &m.exact {
        Some(ValueMatch::Exact(v.clone()))
    } else if let Some(v) = &m.prefix {
        Some(ValueMatch::Prefix(v.clone()))
    } else {
        m.regex.as_ref().map(|v| ValueMatch::Regex(v.clone()))
    }
}

fn request_match(m: &HttpMatchRequest) -> RequestMatch {
    let pairs = |map: &BTreeMap<String, StringMatch>, lower: bool| {
        map.iter()
            .map(|(k, v)| {
                let k = if lower {
                    k.to_ascii_lowercase()
                } else {
                    k.clone()
                };
                (k, value_match(v).unwrap_or(ValueMatch::Present))
            })
            .collect()
    };
    RequestMatch {
        uri: m.uri.as_ref().and_then(value_match),
        method: m.method.as_ref().and_then(value_match),
        authority: m.authority.as_ref().and_then(value_match),
        scheme: m.scheme.as_ref().and_then(value_match),
        headers: pairs(&m.headers, true),
        without_headers: pairs(&m.without_headers, true),
        query_params: pairs(&m.query_params, false),
        port: m.port.and_then(|p| u16::try_from(p).ok()),
        ignore_uri_case: m.ignore_uri_case,
    }
}

fn millis(d: Option<&String>) -> Option<u64> {
    d.and_then(|t| tessera_model::duration::parse(t))
        .map(|d| d.as_millis() as u64)
}

fn http_rule(
    world: &World,
    vs: &VirtualServiceRule,
    i: usize,
    r: &HttpRoute,
    gw: &GatewayRule,
    number: u16,
    me: &WorkloadEntry,
) -> Option<HttpRouteRule> {
    let applies = |m: &&HttpMatchRequest| {
        (m.gateways.is_empty() || names_gateway(&m.gateways, &vs.namespace, gw))
            && tessera_model::meta::subset(&m.source_labels, &me.labels)
            && m.port.is_none_or(|p| p == u32::from(number))
    };
    let matches: Vec<RequestMatch> = r
        .matches
        .iter()
        .filter(applies)
        .map(request_match)
        .collect();
    if !r.matches.is_empty() && matches.is_empty() {
        return None;
    }
    let action = if let Some(rd) = &r.redirect {
        RouteAction::Redirect {
            uri: rd.uri.clone(),
            authority: rd.authority.clone(),
            scheme: rd.scheme.clone(),
            port: rd.port.and_then(|p| u16::try_from(p).ok()),
            code: rd
                .redirect_code
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(301),
        }
    } else if let Some(dr) = &r.direct_response {
        RouteAction::DirectResponse {
            status: dr["status"].as_u64().unwrap_or(200) as u16,
            body: dr["body"]["string"].as_str().map(str::to_string),
        }
    } else {
        let dests: Vec<_> = r
            .route
            .iter()
            .map(|d| (d.destination.as_ref(), d.weight))
            .collect();
        RouteAction::Forward {
            destinations: weighted(world, &vs.namespace, &dests),
            rewrite_uri: r.rewrite.as_ref().and_then(|w| w.uri.clone()),
            rewrite_authority: r.rewrite.as_ref().and_then(|w| w.authority.clone()),
            timeout_ms: millis(r.timeout.as_ref()).filter(|t| *t > 0),
            retries: match &r.retries {
                None => RetryPolicy::default(),
                Some(rt) => RetryPolicy {
                    attempts: rt.attempts.max(0) as u32,
                    per_try_timeout_ms: millis(rt.per_try_timeout.as_ref()),
                    retry_on: rt
                        .retry_on
                        .as_deref()
                        .map(|s| s.split(',').map(|t| t.trim().to_string()).collect())
                        .unwrap_or_else(|| RetryPolicy::default().retry_on),
                },
            },
        }
    };
    Some(HttpRouteRule {
        source: format!("VirtualService {}/{} http[{i}]", vs.namespace, vs.name),
        matches,
        action,
    })
}

fn tls_routes(
    world: &World,
    gw: &GatewayRule,
    server: &Server,
    bound: &[&VirtualServiceRule],
    number: u16,
) -> Vec<L4Route> {
    let mut out: Vec<L4Route> = Vec::new();
    for vs in bound {
        for (i, r) in vs.spec.tls.iter().enumerate() {
            let mut sni = Vec::new();
            for m in &r.matches {
                if !(m.gateways.is_empty() || names_gateway(&m.gateways, &vs.namespace, gw)) {
                    continue;
                }
                if m.port.is_some_and(|p| p != u32::from(number)) {
                    continue;
                }
                for h in &m.sni_hosts {
                    let covered = server.hosts.iter().any(|s| {
                        namespace_allows(s, &gw.namespace, &vs.namespace)
                            && intersect(h, strip_ns(s)).is_some()
                    });
                    let taken = out
                        .iter()
                        .any(|o| o.sni_hosts.contains(&h.to_ascii_lowercase()));
                    if covered && !taken {
                        sni.push(h.to_ascii_lowercase());
                    }
                }
            }
            if sni.is_empty() {
                continue;
            }
            let dests: Vec<_> = r
                .route
                .iter()
                .map(|d| (d.destination.as_ref(), d.weight))
                .collect();
            out.push(L4Route {
                source: format!("VirtualService {}/{} tls[{i}]", vs.namespace, vs.name),
                sni_hosts: sni,
                destinations: weighted(world, &vs.namespace, &dests),
            });
        }
    }
    out
}

fn tcp_routes(
    world: &World,
    gw: &GatewayRule,
    bound: &[&VirtualServiceRule],
    number: u16,
) -> Vec<L4Route> {
    let mut out = Vec::new();
    for vs in bound {
        for (i, r) in vs.spec.tcp.iter().enumerate() {
            let applies = r.matches.is_empty()
                || r.matches.iter().any(|m| {
                    (m.gateways.is_empty() || names_gateway(&m.gateways, &vs.namespace, gw))
                        && m.port.is_none_or(|p| p == u32::from(number))
                });
            if !applies {
                continue;
            }
            let dests: Vec<_> = r
                .route
                .iter()
                .map(|d| (d.destination.as_ref(), d.weight))
                .collect();
            out.push(L4Route {
                source: format!("VirtualService {}/{} tcp[{i}]", vs.namespace, vs.name),
                sni_hosts: vec![],
                destinations: weighted(world, &vs.namespace, &dests),
            });
        }
    }
    out
}

/// A server's TLS: files, a `credentialName` Secret (looked up in the gateway pod's
/// namespace), or the workload certificate for ISTIO_MUTUAL.
fn server_tls(
    world: &World,
    me: &WorkloadEntry,
    t: &tessera_model::istio::ServerTlsSettings,
    out: &mut Compiled,
) -> Result<ServerTls, String> {
    let mode = match t.effective_mode() {
        ApiMode::Simple => TerminationMode::Simple,
        ApiMode::Mutual => TerminationMode::Mutual,
        ApiMode::OptionalMutual => TerminationMode::OptionalMutual,
        ApiMode::IstioMutual => TerminationMode::IstioMutual,
        other => return Err(format!("TLS mode {other:?} does not terminate")),
    };
    let wants_ca = matches!(
        mode,
        TerminationMode::Mutual | TerminationMode::OptionalMutual
    );
    let (key_pair, client_ca) = if mode == TerminationMode::IstioMutual {
        (KeyPairSource::Workload, Some(CaBundleSource::MeshRoots))
    } else if let Some(cred) = &t.credential_name {
        let (ns, name) = credential_ref(cred, &me.namespace);
        if ns != me.namespace {
            return Err(format!(
                "credentialName {cred:?} names namespace {ns}; the gateway reads Secrets of its own namespace {}",
                me.namespace
            ));
        }
        out.secrets.push(key_pair_secret(world, &ns, &name));
        let ca = match (&t.ca_certificates, wants_ca) {
            (_, false) => None,
            (Some(file), true) => Some(CaBundleSource::File { path: file.into() }),
            (None, true) => {
                out.secrets.push(ca_secret(world, &ns, &name));
                Some(CaBundleSource::Secret {
                    name: format!("kubernetes://{name}-cacert"),
                })
            }
        };
        (
            KeyPairSource::Secret {
                name: format!("kubernetes://{name}"),
            },
            ca,
        )
    } else {
        let (Some(cert), Some(key)) = (&t.server_certificate, &t.private_key) else {
            return Err(
                "SIMPLE TLS requires a server certificate and a private key (or credentialName)"
                    .into(),
            );
        };
        let ca = match (&t.ca_certificates, wants_ca) {
            (_, false) => None,
            (Some(ca), true) => Some(CaBundleSource::File { path: ca.into() }),
            (None, true) => return Err("MUTUAL TLS requires a client CA bundle".into()),
        };
        (
            KeyPairSource::Files {
                cert_chain: cert.into(),
                private_key: key.into(),
            },
            ca,
        )
    };
    Ok(ServerTls {
        mode,
        key_pair,
        client_ca,
        subject_alt_names: t.subject_alt_names.clone(),
        min_protocol_version: version(t.min_protocol_version),
        max_protocol_version: version(t.max_protocol_version),
        cipher_suites: t.cipher_suites.clone(),
    })
}

/// `name`, `ns/name` or `kubernetes://[ns/]name`.
fn credential_ref(cred: &str, default_ns: &str) -> (String, String) {
    let bare = cred.strip_prefix("kubernetes://").unwrap_or(cred);
    match bare.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (default_ns.to_string(), bare.to_string()),
    }
}

fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<String> {
    data.get(key)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn found_keys(data: &BTreeMap<String, Vec<u8>>) -> String {
    data.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The key pair of Secret `name`: `cert`/`key` first, else `tls.crt`/`tls.key`.
fn key_pair_secret(world: &World, ns: &str, name: &str) -> SecretMaterial {
    let resource = format!("kubernetes://{name}");
    let Some(data) = world.secrets.get(&(ns.to_string(), name.to_string())) else {
        return SecretMaterial {
            name: resource,
            error: Some(format!("secret {ns}/{name} not found")),
            ..Default::default()
        };
    };
    let pair = text(data, "cert")
        .zip(text(data, "key"))
        .or_else(|| text(data, "tls.crt").zip(text(data, "tls.key")));
    match pair {
        Some((cert, key)) => SecretMaterial {
            name: resource,
            cert_chain: Some(cert),
            private_key: Some(key),
            ca_cert: None,
            error: None,
        },
        None => SecretMaterial {
            name: resource,
            error: Some(format!(
                "found secret {ns}/{name}, but didn't have expected keys (cert and key) or (tls.crt and tls.key); found: {}",
                found_keys(data)
            )),
            ..Default::default()
        },
    }
}

/// The client CA for `name`: Secret `<name>-cacert` first, else `<name>` itself; keys
/// `cacert` or `ca.crt`.
fn ca_secret(world: &World, ns: &str, name: &str) -> SecretMaterial {
    let resource = format!("kubernetes://{name}-cacert");
    let get = |n: &str| world.secrets.get(&(ns.to_string(), n.to_string()));
    let (data, from) = match get(&format!("{name}-cacert")) {
        Some(d) => (d, format!("{name}-cacert")),
        None => match get(name) {
            Some(d) => (d, name.to_string()),
            None => {
                return SecretMaterial {
                    name: resource,
                    error: Some(format!(
                        "secret {ns}/{name}-cacert not found (nor {ns}/{name})"
                    )),
                    ..Default::default()
                }
            }
        },
    };
    match text(data, "cacert").or_else(|| text(data, "ca.crt")) {
        Some(ca) => SecretMaterial {
            name: resource,
            ca_cert: Some(ca),
            ..Default::default()
        },
        None => SecretMaterial {
            name: resource,
            error: Some(format!(
                "found secret {ns}/{from}, but didn't have expected keys cacert or ca.crt; found: {}",
                found_keys(data)
            )),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_intersect_with_wildcards_both_ways() {
        for (vs, server, want) in [
            (
                "httpbin.example.com",
                "httpbin.example.com",
                Some("httpbin.example.com"),
            ),
            ("*", "httpbin.example.com", Some("httpbin.example.com")),
            ("httpbin.example.com", "*", Some("httpbin.example.com")),
            ("a.example.com", "*.example.com", Some("a.example.com")),
            ("*.example.com", "a.example.com", Some("a.example.com")),
            ("other.example.com", "httpbin.example.com", None),
            ("example.com", "*.example.com", None),
            (
                "HTTPBIN.example.com",
                "httpbin.example.com",
                Some("httpbin.example.com"),
            ),
        ] {
            assert_eq!(intersect(vs, server).as_deref(), want, "{vs} ∩ {server}");
        }
    }

    #[test]
    fn credential_names_take_istio_spellings() {
        assert_eq!(
            credential_ref("httpbin-credential", "istio-system"),
            ("istio-system".into(), "httpbin-credential".into())
        );
        assert_eq!(
            credential_ref("kubernetes://other/cred", "istio-system"),
            ("other".into(), "cred".into())
        );
    }
}
