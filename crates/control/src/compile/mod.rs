//! The policy compiler: `(world, proxy) → ProxyConfig`, pure. Each pass reads the
//! [`World`] and writes its part of the configuration: the outbound services with the TLS
//! per endpoint (`outbound`), the inbound ports with their effective modes (`inbound`),
//! Sidecar ingress listeners (`sidecar_ingress`) and gateway listeners (`gateway`). The
//! proxy only looks the results up; `explain` reads the same output.

pub(crate) mod authz;
mod egress;
mod gateway;
mod inbound;
mod outbound;
mod sidecar_ingress;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tessera_contract::config::{
    CertificateSource, Inbound, InboundMode, Listeners, Node, PortProtocol, ProxyConfig, TlsVersion,
};
use tessera_model::istio::ClientTlsMode;

pub(crate) use self::gateway::compile_gateway;
pub(crate) use self::sidecar_ingress::ignored_tls;
pub use crate::outbound_cache::{CompiledService, OutboundCache, OutboundScope};
use crate::policy::{MtlsMode, Protocol};
use crate::world::World;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("node id {0:?} is not of the form <pod>.<namespace>")]
    BadNodeId(String),
    #[error("no pod {pod} in namespace {namespace} (yet)")]
    UnknownPod { pod: String, namespace: String },
}

/// The proxy configuration of the pod `node_id` (`pod.namespace`) names.
pub fn compile(world: &World, node_id: &str) -> Result<ProxyConfig, CompileError> {
    let (mut config, services) = compile_parts(world, node_id)?;
    config.services = services
        .services
        .iter()
        .map(|c| c.service.clone())
        .collect();
    Ok(config)
}

/// [`compile`] in two parts: the configuration without its services, and the services,
/// shared with every proxy of the same outbound scope (config push sends them apart).
pub fn compile_parts(
    world: &World,
    node_id: &str,
) -> Result<(ProxyConfig, std::sync::Arc<OutboundScope>), CompileError> {
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
        let g = compile_gateway(world, me);
        (Listeners::default(), Inbound::default(), g)
    } else {
        let any = |port| Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
        let listeners = Listeners {
            outbound_capture: any(15001),
            inbound_capture: any(15006),
            explicit: vec![],
        };
        (
            listeners,
            // A Sidecar's ingress listeners replace the ports the Services give.
            sidecar_ingress::inbound(world, me).unwrap_or_else(|| inbound::inbound(world, me)),
            Default::default(),
        )
    };
    let config = ProxyConfig {
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
        services: vec![],
        inbound,
        authorization: authz::authorization(world, me),
        control_plane: None,
        volumes: Default::default(),
        gateway: gateway.listeners,
        secrets: gateway.secrets,
    };
    Ok((config, outbound::scope(world, me)))
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

/// TLS 1.0 and 1.1 are not offered by this proxy; a minimum of either means 1.2.
pub fn version(v: Option<tessera_model::istio::TlsProtocol>) -> Option<TlsVersion> {
    use tessera_model::istio::TlsProtocol as P;
    match v? {
        P::Auto => None,
        P::V1_0 | P::V1_1 | P::V1_2 => Some(TlsVersion::V1_2),
        P::V1_3 => Some(TlsVersion::V1_3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Objects, Op};
    use crate::policy::MeshOptions;
    use tessera_contract::config::TlsMode;

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

    /// An ingress gateway pod and an HTTP Gateway for `*`, with `http` routes of one
    /// VirtualService bound to it; the routes of the gateway's one virtual host.
    fn gateway_routes(http: &str) -> Vec<tessera_contract::config::HttpRouteRule> {
        let w = world(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: gw, labels: {{istio: ingressgateway}}}}\nspec:\n  containers: [{{name: istio-proxy, image: p, args: [proxy, router]}}]\nstatus: {{phase: Running, podIP: 10.244.0.9}}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n{http}"
        ));
        let config = compile(&w, "gw.default").unwrap();
        config.gateway[0].servers[0].virtual_hosts[0].routes.clone()
    }

    fn sources(routes: &[tessera_contract::config::HttpRouteRule]) -> Vec<&str> {
        routes.iter().map(|r| r.source.as_str()).collect()
    }

    #[test]
    fn routes_after_a_catch_all_route_are_dropped_as_istio_drops_them() {
        let route = |m: &str| {
            format!("  - {m}route: [{{destination: {{host: a.default.svc.cluster.local, port: {{number: 80}}}}}}]\n")
        };
        let routes = gateway_routes(&format!(
            "{}{}{}",
            route("match: [{uri: {prefix: /a}}]\n    "),
            route(""),
            route("match: [{uri: {prefix: /b}}]\n    ")
        ));
        assert_eq!(
            sources(&routes),
            [
                "VirtualService default/vs http[0]",
                "VirtualService default/vs http[1]"
            ]
        );
        // A match on the path `/` alone matches everything too.
        let routes = gateway_routes(&format!(
            "{}{}",
            route("match: [{uri: {prefix: /}}]\n    "),
            route("match: [{uri: {prefix: /b}}]\n    ")
        ));
        assert_eq!(sources(&routes), ["VirtualService default/vs http[0]"]);
        // A header condition narrows it: the next route stays.
        let routes = gateway_routes(&format!(
            "{}{}",
            route("match: [{uri: {prefix: /}, headers: {x-a: {exact: \"1\"}}}]\n    "),
            route("match: [{uri: {prefix: /b}}]\n    ")
        ));
        assert_eq!(routes.len(), 2);
    }

    #[test]
    fn route_weights_are_shares_of_their_total() {
        // 60 and 30 (not adding up to 100): the proxy sends weight / 90 of the requests
        // to each, so the weights are passed on unchanged.
        let routes = gateway_routes(
            "  - route:\n    - {destination: {host: a.default.svc.cluster.local, port: {number: 80}}, weight: 60}\n    - {destination: {host: b.default.svc.cluster.local, port: {number: 80}}, weight: 30}\n",
        );
        let tessera_contract::config::RouteAction::Forward { destinations, .. } = &routes[0].action
        else {
            panic!("{routes:?}")
        };
        let weights: Vec<(&str, u32)> = destinations
            .iter()
            .map(|d| (d.service.as_str(), d.weight))
            .collect();
        assert_eq!(
            weights,
            [
                ("a.default.svc.cluster.local:80", 60),
                ("b.default.svc.cluster.local:80", 30)
            ]
        );
    }

    #[test]
    fn a_sidecar_ingress_port_without_protocol_is_detected_like_an_unnamed_service_port() {
        let w = world(&format!(
            "{}{}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: db}}\nspec:\n  workloadSelector: {{labels: {{app: db}}}}\n  ingress:\n  - port: {{number: 9080, name: web}}\n    defaultEndpoint: 127.0.0.1:8080\n  - port: {{number: 3306}}\n    defaultEndpoint: 127.0.0.1:3306\n  - port: {{number: 9090, protocol: HTTP}}\n    defaultEndpoint: 127.0.0.1:9090\n",
            SVC.replace("clusterIP: None\n  ", ""),
            pod("db-1", "db", true, "10.244.0.3")
        ));
        let server = compile(&w, "db-1.default").unwrap();
        let ports: Vec<(u16, PortProtocol)> = server
            .inbound
            .ports
            .iter()
            .map(|p| (p.port, p.protocol))
            .collect();
        // 3306 (MySQL) is server-first: like an unnamed Service port there, it is TCP.
        assert_eq!(
            ports,
            [
                (3306, PortProtocol::Tcp),
                (9080, PortProtocol::Auto),
                (9090, PortProtocol::Http)
            ]
        );
    }
}
