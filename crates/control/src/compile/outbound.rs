//! The outbound pass: every service the proxy can call (its Sidecar's egress hosts scope
//! them), with its endpoints and the TLS toward each. An explicit DestinationRule `tls`
//! wins; otherwise auto mTLS sends mesh mTLS to endpoints that have a sidecar and take it,
//! plaintext to the others.
//!
//! A service compiles the same for every client that uses the same DestinationRule for it
//! and imports the same ports, so it is compiled (and serialised) once per world and shared
//! by every snapshot that carries it; a client's list of services is shared by every
//! client of its scope (namespace, Sidecar, and the selector DestinationRules that pick it).

use std::net::SocketAddr;
use std::sync::Arc;

use tessera_contract::config::{Endpoint, EndpointTls, Service, ServicePort, TlsMode};
use tessera_model::istio::ClientTlsMode;

use super::egress::imported;
use super::{client_mode_name, port_protocol};
use crate::outbound_cache::{CompiledService, Imported, OutboundScope, ScopeKey, ServiceKey};
use crate::policy::MtlsMode;
use crate::registry::{ServiceEntry, ServicePortEntry, WorkloadEntry};
use crate::world::World;

/// The services `me` is given, shared with every client of its scope.
pub(crate) fn scope(world: &World, me: &WorkloadEntry) -> Arc<OutboundScope> {
    let key = ScopeKey {
        namespace: me.namespace.clone(),
        sidecar: world.sidecar_index(me),
        selector_rules: world.selector_rules(me),
    };
    world.outbound.scope(key, || compile_scope(world, me))
}

fn compile_scope(world: &World, me: &WorkloadEntry) -> OutboundScope {
    let sidecar = world.sidecar_for(me);
    let mut services = Vec::new();
    for (index, svc) in world.registry.services.iter().enumerate() {
        let imported = match sidecar {
            Some(sc) => imported(&sc.egress, &sc.namespace, &svc.namespace, &svc.host),
            None => Imported::AllPorts,
        };
        if imported == Imported::No {
            continue;
        }
        let key = ServiceKey {
            service: index,
            rule: world.destination_rule(me, svc),
            imported,
        };
        let compiled = world
            .outbound
            .service(&key, || compile_service(world, me, svc, &key.imported));
        services.push(compiled);
    }
    services.sort_by(|a, b| a.service.host.cmp(&b.service.host));
    OutboundScope { services }
}

fn compile_service(
    world: &World,
    me: &WorkloadEntry,
    svc: &ServiceEntry,
    imported: &Imported,
) -> CompiledService {
    let reg = &world.registry;
    let service = Service {
        host: svc.host.clone(),
        vips: svc.cluster_ip.into_iter().collect(),
        ports: svc
            .ports
            .iter()
            .filter(|port| match imported {
                Imported::Ports(ports) => ports.contains(&port.port),
                _ => true,
            })
            .filter_map(|port| {
                let protocol = port_protocol(port.protocol)?;
                let mut endpoints: Vec<Endpoint> = reg
                    .endpoints(svc, port)
                    .map(|ep| Endpoint {
                        address: SocketAddr::new(ep.ip, ep.port),
                        workload: Some(ep.workload.id()),
                        tls: endpoint_tls(world, me, svc, port, ep.workload, ep.port),
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
    };
    CompiledService::new(service)
}

/// The TLS a sidecar in `client_ns` originates to one endpoint.
pub(crate) fn endpoint_tls(
    world: &World,
    client: &WorkloadEntry,
    svc: &ServiceEntry,
    port: &ServicePortEntry,
    server: &WorkloadEntry,
    target_port: u16,
) -> EndpointTls {
    let identity = world.identity_of(server);
    if let Some((source, tls)) = world.tls_rule(client, svc, port) {
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
    if !world.options.auto_mtls {
        return plaintext(
            "auto mTLS is off (values.global.mtls.auto=false) and no DestinationRule sets tls"
                .into(),
        );
    }
    let ns_mode = world.namespace_mode(&svc.namespace);
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
    let mode = world.effective_mode(server, target_port);
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

/// A headless Service's connections go to the pod address directly, with no
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
