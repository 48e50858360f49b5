//! Sidecar ingress listeners: a `Sidecar` with `ingress` replaces the inbound
//! ports a workload's Services would give it, forwards each to its `defaultEndpoint`, and
//! — only with `ENABLE_TLS_ON_SIDECAR_INGRESS` and only on a port whose effective mode is
//! DISABLE — terminates the client's TLS with the files its `tls` names. Pure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tessera_contract::config::{
    CaBundleSource, Inbound, InboundPort, KeyPairSource, PortProtocol, ServerTls, TerminationMode,
};
use tessera_model::istio::{IstioIngressListener, ServerTlsMode as ApiMode, ServerTlsSettings};

use super::{inbound_mode, port_protocol, version};
use crate::policy::{classify, MtlsMode, Protocol};
use crate::registry::WorkloadEntry;
use crate::world::World;

/// The inbound ports a Sidecar's ingress listeners give `me`; `None` when no Sidecar
/// with ingress applies (the Services' ports are used then).
/// The inbound side of a workload whose Sidecar has ingress listeners; `None` without one.
pub(super) fn inbound(world: &World, me: &WorkloadEntry) -> Option<Inbound> {
    let ports = sidecar_ports(world, me)?;
    Some(Inbound {
        app_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        default_mode: inbound_mode(world.effective_mode(me, 0).mode),
        ports,
    })
}

pub fn sidecar_ports(world: &World, me: &WorkloadEntry) -> Option<Vec<InboundPort>> {
    let sidecar = world.sidecar_for(me).filter(|s| !s.ingress.is_empty())?;
    let mut ports = Vec::new();
    for (i, l) in sidecar.ingress.iter().enumerate() {
        let Ok(port) = u16::try_from(l.port.number) else {
            continue;
        };
        if ports.iter().any(|p: &InboundPort| p.port == port) {
            continue;
        }
        // Without a protocol the port is detected, as a Service port without a protocol
        // name is (TCP on the server-first well-known ports).
        let declared = classify(Some(&l.port.protocol), None, None, u32::from(port));
        let mode = world.effective_mode(me, port);
        let source = format!(
            "Sidecar {}/{} ingress[{i}]",
            sidecar.namespace, sidecar.name
        );
        let (tls, tls_note) = match listener_tls(world, l, mode.mode, port) {
            None => (None, String::new()),
            Some(Ok(tls)) => (
                Some(tls),
                "; terminates the client's TLS with its files".to_string(),
            ),
            Some(Err(why)) => (None, format!("; its tls is ignored: {why}")),
        };
        // Terminated here, the port carries what was inside the TLS.
        let protocol = match (&tls, declared) {
            (Some(_), Protocol::Https) => PortProtocol::Http,
            (Some(_), _) => PortProtocol::Tcp,
            (None, p) => match port_protocol(p) {
                Some(p) => p,
                None => continue,
            },
        };
        ports.push(InboundPort {
            port,
            protocol,
            mode: inbound_mode(mode.mode),
            reason: format!("{mode}; {source}{tls_note}"),
            forward_to: l.default_endpoint.as_deref().and_then(default_endpoint),
            tls,
            operation: Some(format!("{}.{}:{port}/*", sidecar.name, sidecar.namespace)),
        });
    }
    ports.sort_by_key(|p| p.port);
    Some(ports)
}

/// The TLS a listener terminates: `None` without `tls`, the reason when it is ignored.
fn listener_tls(
    world: &World,
    l: &IstioIngressListener,
    mode: MtlsMode,
    port: u16,
) -> Option<Result<ServerTls, String>> {
    let settings = l.tls.as_ref()?;
    Some(if !world.options.enable_tls_on_sidecar_ingress {
        Err(
            "the control plane runs without values.pilot.env.ENABLE_TLS_ON_SIDECAR_INGRESS=true"
                .to_string(),
        )
    } else if mode != MtlsMode::Disable {
        Err(format!(
            "the port's mode is {mode} (user TLS needs portLevelMtls {port}: DISABLE)"
        ))
    } else {
        server_tls(settings)
    })
}

/// Sidecar ingress listeners whose `tls` does not take effect on a workload they apply
/// to: (`Sidecar ns/name ingress[i]`, the workload, why).
pub fn ignored_tls(world: &World) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for w in world.registry.workloads.iter().filter(|w| w.has_sidecar) {
        let Some(sidecar) = world.sidecar_for(w) else {
            continue;
        };
        for (i, l) in sidecar.ingress.iter().enumerate() {
            let Ok(port) = u16::try_from(l.port.number) else {
                continue;
            };
            let mode = world.effective_mode(w, port).mode;
            if let Some(Err(why)) = listener_tls(world, l, mode, port) {
                out.push((
                    format!(
                        "Sidecar {}/{} ingress[{i}]",
                        sidecar.namespace, sidecar.name
                    ),
                    w.id(),
                    why,
                ));
            }
        }
    }
    out
}

/// `127.0.0.1:<p>` stays on loopback; `0.0.0.0:<p>` (Envoy: the pod's own address) is
/// reached on loopback too: the proxy's own connections to the pod address would be
/// captured back into its inbound listener (Envoy binds them to 127.0.0.6 to escape).
/// Unix sockets are not served here.
fn default_endpoint(endpoint: &str) -> Option<SocketAddr> {
    let addr: SocketAddr = endpoint.parse().ok()?;
    if addr.ip().is_unspecified() {
        return Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            addr.port(),
        ));
    }
    Some(addr)
}

/// The file-based server TLS of a Sidecar ingress listener (validation already refused
/// credentialName, ISTIO_MUTUAL and the rest; this only maps).
pub fn server_tls(t: &ServerTlsSettings) -> Result<ServerTls, String> {
    let mode = match t.effective_mode() {
        ApiMode::Simple => TerminationMode::Simple,
        ApiMode::Mutual => TerminationMode::Mutual,
        ApiMode::OptionalMutual => TerminationMode::OptionalMutual,
        other => return Err(format!("mode {other:?} is not served on a Sidecar ingress")),
    };
    let (Some(cert), Some(key)) = (&t.server_certificate, &t.private_key) else {
        return Err("serverCertificate and privateKey are required".into());
    };
    let client_ca = match (&t.ca_certificates, mode) {
        (_, TerminationMode::Simple) => None,
        (Some(ca), _) => Some(CaBundleSource::File { path: ca.into() }),
        (None, _) => return Err("MUTUAL TLS requires a client CA bundle (caCertificates)".into()),
    };
    Ok(ServerTls {
        mode,
        key_pair: KeyPairSource::Files {
            cert_chain: cert.into(),
            private_key: key.into(),
        },
        client_ca,
        subject_alt_names: t.subject_alt_names.clone(),
        min_protocol_version: version(t.min_protocol_version),
        max_protocol_version: version(t.max_protocol_version),
        cipher_suites: t.cipher_suites.clone(),
    })
}
