//! Addresses and ports the API server allocates: a Service's clusterIP from the service
//! range, and node ports for NodePort and LoadBalancer Services.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use tessera_model::{Kind, Resource};

use super::{ObjectKey, Objects};

/// Service VIPs: 10.96.0.0/16, as kube-proxy's default service CIDR.
const SERVICE_CIDR: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 96, 0, 0), 16);

/// Node ports, as the Kubernetes default.
const NODE_PORT_RANGE: (i32, i32) = (30000, 32767);

impl Objects {
    /// A Service's clusterIP and node ports, kept across updates.
    pub(super) fn allocate(
        &self,
        key: &ObjectKey,
        svc: &mut tessera_model::kube::Service,
        old: Option<&tessera_model::kube::Service>,
    ) -> Result<(), String> {
        let old_ip = old.and_then(|o| o.spec.cluster_ip.as_deref());
        let ip = self
            .cluster_ip(key, svc.spec.cluster_ip.as_deref(), old_ip)
            .map_err(|e| format!("spec.clusterIP: {e}"))?;
        svc.spec.cluster_ip = Some(ip.clone());
        svc.spec.cluster_ips = vec![ip];
        self.node_ports(key, svc, old)
    }

    /// The clusterIP a Service gets: its current one (immutable), the one asked for when
    /// free and inside the service range, "None" for headless, else the next free address.
    fn cluster_ip(
        &self,
        key: &ObjectKey,
        asked: Option<&str>,
        current: Option<&str>,
    ) -> Result<String, String> {
        let asked = asked.filter(|a| !a.is_empty());
        if let Some(cur) = current {
            return match asked {
                Some(a) if a != cur => Err(format!("Invalid value: {a:?}: field is immutable")),
                _ => Ok(cur.to_string()),
            };
        }
        let used: BTreeSet<String> = self
            .map
            .iter()
            .filter(|(k, _)| k.kind == Kind::Service && ***k != *key)
            .filter_map(|(_, s)| match &s.resource {
                Resource::Service(svc) => svc.spec.cluster_ip.clone(),
                _ => None,
            })
            .collect();
        let (base, bits) = SERVICE_CIDR;
        let base = u32::from(base);
        let size = 1u32 << (32 - bits);
        match asked {
            Some("None") => Ok("None".into()),
            Some(a) => {
                let ip: Ipv4Addr = a.parse().map_err(|_| {
                    format!("Invalid value: {a:?}: must be a valid IP address or \"None\"")
                })?;
                let n = u32::from(ip);
                if n < base || n >= base + size {
                    return Err(format!(
                        "Invalid value: {a:?}: provided IP is not in the valid range. The range of valid IPs is {}/{bits}",
                        Ipv4Addr::from(base)
                    ));
                }
                if used.contains(a) {
                    return Err(format!(
                        "Invalid value: {a:?}: provided IP is already allocated"
                    ));
                }
                Ok(a.to_string())
            }
            None => {
                // .0 is the network, .1 is kept for the API server as in Kubernetes.
                (2..size - 1)
                    .map(|i| Ipv4Addr::from(base + i).to_string())
                    .find(|ip| !used.contains(ip))
                    .ok_or_else(|| "Invalid value: \"\": the service range is full".to_string())
            }
        }
    }

    /// NodePort and LoadBalancer services get a node port per port, as the API server
    /// allocates them: the one asked for (in range, not taken), the port's current one, or
    /// a free one picked pseudo-randomly (so two meshes on one host rarely pick the same
    /// host port). The local runtime publishes them on 127.0.0.1.
    fn node_ports(
        &self,
        key: &ObjectKey,
        svc: &mut tessera_model::kube::Service,
        old: Option<&tessera_model::kube::Service>,
    ) -> Result<(), String> {
        let published = matches!(
            svc.spec.r#type.as_deref(),
            Some("NodePort") | Some("LoadBalancer")
        );
        if !published {
            for (i, p) in svc.spec.ports.iter().enumerate() {
                if p.node_port.is_some() {
                    return Err(format!(
                        "spec.ports[{i}].nodePort: Forbidden: may not be used when `type` is '{}'",
                        svc.spec.r#type.as_deref().unwrap_or("ClusterIP")
                    ));
                }
            }
            return Ok(());
        }
        let mut used: BTreeSet<i32> = self
            .map
            .iter()
            .filter(|(k, _)| k.kind == Kind::Service && ***k != *key)
            .filter_map(|(_, s)| match &s.resource {
                Resource::Service(svc) => Some(svc.spec.ports.iter().filter_map(|p| p.node_port)),
                _ => None,
            })
            .flatten()
            .collect();
        let (lo, hi) = NODE_PORT_RANGE;
        for (i, p) in svc.spec.ports.iter_mut().enumerate() {
            if let Some(asked) = p.node_port {
                if !(lo..=hi).contains(&asked) {
                    return Err(format!(
                        "spec.ports[{i}].nodePort: Invalid value: {asked}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                    ));
                }
                if !used.insert(asked) {
                    return Err(format!(
                        "spec.ports[{i}].nodePort: Invalid value: {asked}: provided port is already allocated"
                    ));
                }
                continue;
            }
            let current = old.and_then(|o| {
                o.spec
                    .ports
                    .iter()
                    .find(|op| op.port == p.port && op.name == p.name)
                    .and_then(|op| op.node_port)
            });
            let pick = match current.filter(|c| !used.contains(c)) {
                Some(c) => c,
                None => {
                    let span = (hi - lo + 1) as u64;
                    let seed = fnv(&format!(
                        "{}/{}/{}/{}",
                        key.namespace, key.name, p.port, self.salt
                    ));
                    (0..span)
                        .map(|k| lo + ((seed + k) % span) as i32)
                        .find(|c| !used.contains(c))
                        .ok_or_else(|| {
                            format!(
                                "spec.ports[{i}].nodePort: the node port range {lo}-{hi} is full"
                            )
                        })?
                }
            };
            used.insert(pick);
            p.node_port = Some(pick);
        }
        Ok(())
    }
}

/// FNV-1a: a spread of node ports over the range, from the service's name and the planning
/// clock (pure: the same plan at the same instant picks the same port).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
