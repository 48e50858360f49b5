//! The inbound pass: the workload's ports (its Services' target ports and its declared
//! container ports), each with its protocol and effective mTLS mode and why.

use std::net::{IpAddr, Ipv4Addr};

use tessera_contract::config::{Inbound, InboundPort, PortProtocol};

use super::{inbound_mode, port_protocol};
use crate::registry::WorkloadEntry;
use crate::world::World;

/// The ports a workload's Services and containers declare (a Sidecar with ingress
/// listeners replaces them: see `sidecar_ingress`).
pub(super) fn inbound(world: &World, me: &WorkloadEntry) -> Inbound {
    let default = world.effective_mode(me, 0);
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
