//! The service registry: namespaces, services, workloads (pods) and the endpoints that join
//! them, read from the applied objects. Pure: the same objects give the same registry.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::policy::{classify, Protocol};
use tessera_model::kube::Pod;
use tessera_model::meta::{subset, IntOrString, Labels};
pub use tessera_model::names::CLUSTER_DOMAIN;
use tessera_model::names::{PROXY_CONTAINER, TLS_MODE_LABEL};
use tessera_model::{Kind, Resource};

use crate::objects::Objects;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceEntry {
    pub name: String,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortEntry {
    pub name: Option<String>,
    pub port: u16,
    pub target: IntOrString,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    /// `name.namespace.svc.cluster.local`.
    pub host: String,
    /// `None` for headless Services.
    pub cluster_ip: Option<IpAddr>,
    pub selector: Labels,
    pub ports: Vec<ServicePortEntry>,
}

impl ServiceEntry {
    /// Whether `w` is one of its pods: same namespace, selector labels present (a Service
    /// without a selector selects no pod).
    pub fn selects(&self, w: &WorkloadEntry) -> bool {
        w.namespace == self.namespace
            && !self.selector.is_empty()
            && subset(&self.selector, &w.labels)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEntry {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub service_account: String,
    /// Set once the pod runs (status.podIP).
    pub ip: Option<IpAddr>,
    /// It has an `istio-proxy` container.
    pub has_sidecar: bool,
    /// Its `istio-proxy` runs as a gateway (`proxy router`), not as a sidecar.
    pub is_gateway: bool,
    /// Named container ports, for named targetPorts.
    pub named_ports: BTreeMap<String, u16>,
    /// Every declared container port, sorted.
    pub container_ports: Vec<u16>,
    /// The name of the controller (Deployment, ...) that owns the pod.
    pub owner: Option<String>,
}

impl WorkloadEntry {
    /// `pod.namespace`: the node id of its proxy.
    pub fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// Auto mTLS sends mesh mTLS to it only with this label (`security.istio.io/tlsMode: istio`).
    pub fn tls_mode_istio(&self) -> bool {
        self.labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio")
    }

    /// Resolves a Service port's targetPort for this pod.
    pub fn target_port(&self, port: &ServicePortEntry) -> Option<u16> {
        match &port.target {
            IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p != 0),
            IntOrString::String(name) => self.named_ports.get(name).copied(),
        }
    }
}

/// One backend of a service port.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub workload: &'a WorkloadEntry,
    pub ip: IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub namespaces: BTreeMap<String, NamespaceEntry>,
    /// Sorted by namespace, then name.
    pub services: Vec<ServiceEntry>,
    /// Sorted by namespace, then name.
    pub workloads: Vec<WorkloadEntry>,
    /// For each service (same index), the workloads it selects, in `workloads` order: a
    /// cluster's services would otherwise each scan every pod.
    members: Vec<Vec<usize>>,
}

impl Registry {
    pub fn from_objects(objects: &Objects) -> Registry {
        let mut reg = Registry::default();
        for s in objects.iter() {
            match &s.resource {
                Resource::Namespace(ns) => {
                    reg.namespaces.insert(
                        ns.metadata.name.clone(),
                        NamespaceEntry {
                            name: ns.metadata.name.clone(),
                            labels: ns.metadata.labels.clone(),
                        },
                    );
                }
                Resource::Service(svc) => {
                    if svc.spec.r#type.as_deref() == Some("ExternalName") {
                        continue;
                    }
                    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
                    let ports = svc
                        .spec
                        .ports
                        .iter()
                        .filter_map(|p| {
                            let port = u16::try_from(p.port).ok()?;
                            Some(ServicePortEntry {
                                name: p.name.clone(),
                                port,
                                target: p
                                    .target_port
                                    .clone()
                                    .unwrap_or(IntOrString::Int(i64::from(port))),
                                protocol: classify(
                                    p.name.as_deref(),
                                    p.app_protocol.as_deref(),
                                    p.protocol.as_deref(),
                                    u32::from(port),
                                ),
                            })
                        })
                        .collect();
                    reg.services.push(ServiceEntry {
                        host: format!("{}.{}.svc.{CLUSTER_DOMAIN}", svc.metadata.name, namespace),
                        namespace,
                        name: svc.metadata.name.clone(),
                        cluster_ip: svc
                            .spec
                            .cluster_ip
                            .as_deref()
                            .and_then(|ip| ip.parse().ok()),
                        selector: svc.spec.selector.clone(),
                        ports,
                    });
                }
                Resource::Pod(pod) => reg.workloads.push(workload(pod)),
                _ => {}
            }
        }
        reg.services
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        reg.workloads
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        debug_assert!(Kind::Pod.is_namespaced());
        reg.members = reg
            .services
            .iter()
            .map(|svc| {
                // A Service selects pods of its own namespace only.
                let range = reg.namespace_range(&svc.namespace);
                range.filter(|&i| svc.selects(&reg.workloads[i])).collect()
            })
            .collect();
        reg
    }

    /// The indices of the workloads in `ns` (they are sorted by namespace).
    fn namespace_range(&self, ns: &str) -> std::ops::Range<usize> {
        let start = self
            .workloads
            .partition_point(|w| w.namespace.as_str() < ns);
        let end = self
            .workloads
            .partition_point(|w| w.namespace.as_str() <= ns);
        start..end
    }

    /// The pod a proxy with node id `pod.namespace` belongs to.
    pub fn workload(&self, node_id: &str) -> Option<&WorkloadEntry> {
        let (name, ns) = node_id.rsplit_once('.')?;
        let i = self
            .workloads
            .binary_search_by(|w| (w.namespace.as_str(), w.name.as_str()).cmp(&(ns, name)))
            .ok()?;
        Some(&self.workloads[i])
    }

    /// The workloads `svc` (one of `services`) selects, in name order.
    pub fn members<'a>(&'a self, svc: &'a ServiceEntry) -> impl Iterator<Item = &'a WorkloadEntry> {
        let index = self
            .services
            .binary_search_by(|s| {
                (s.namespace.as_str(), s.name.as_str())
                    .cmp(&(svc.namespace.as_str(), svc.name.as_str()))
            })
            .ok();
        let members = index.map_or(&[][..], |i| &self.members[i][..]);
        members.iter().map(|&i| &self.workloads[i])
    }

    /// Running pods the Service selects, with the target port resolved, in name order.
    pub fn endpoints<'a>(
        &'a self,
        svc: &'a ServiceEntry,
        port: &'a ServicePortEntry,
    ) -> impl Iterator<Item = Endpoint<'a>> + 'a {
        self.members(svc).filter_map(move |w| {
            Some(Endpoint {
                workload: w,
                ip: w.ip?,
                port: w.target_port(port)?,
            })
        })
    }

    /// Services whose selector picks `w`.
    pub fn services_of<'a>(
        &'a self,
        w: &'a WorkloadEntry,
    ) -> impl Iterator<Item = &'a ServiceEntry> + 'a {
        self.services.iter().filter(move |s| s.selects(w))
    }
}

fn workload(pod: &Pod) -> WorkloadEntry {
    let ip = pod.status.as_ref().and_then(|s| s.serving_address());
    let mut container_ports: Vec<u16> = pod
        .spec
        .containers
        .iter()
        .filter(|c| c.name != PROXY_CONTAINER)
        .flat_map(|c| &c.ports)
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    container_ports.sort_unstable();
    container_ports.dedup();
    let named_ports = pod
        .spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    let owner = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|refs| refs.as_array())
        .and_then(|refs| {
            refs.iter()
                .find(|r| r["controller"] == serde_json::Value::Bool(true))
                .or_else(|| refs.first())
        })
        .and_then(|r| r["name"].as_str())
        .map(str::to_string);
    WorkloadEntry {
        owner,
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone(),
        labels: pod.metadata.labels.clone(),
        service_account: pod
            .spec
            .service_account_name
            .clone()
            .or_else(|| pod.spec.service_account.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        ip,
        has_sidecar: pod
            .spec
            .containers
            .iter()
            .any(|c| c.name == PROXY_CONTAINER),
        is_gateway: pod
            .spec
            .containers
            .iter()
            .any(|c| c.name == PROXY_CONTAINER && c.args.iter().any(|a| a == "router")),
        named_ports,
        container_ports,
    }
}
