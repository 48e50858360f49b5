//! What the cluster network should look like, from the registry: kube-proxy's service NAT
//! for the cluster namespace, each pod's hosts file, and the services published on the
//! host. Pure: the runtime writes what these return.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use tessera_control::registry::{Registry, CLUSTER_DOMAIN};
use tessera_control::Objects;
use tessera_model::Resource;

/// The pod network (the bridge has the first address).
pub const POD_CIDR: &str = "10.244.0.0/16";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The `n`th pod address (n ≥ 1): 10.244.0.2, 10.244.0.3, ... 10.244.255.254.
pub fn pod_ip(n: u32) -> Option<Ipv4Addr> {
    let host = n.checked_add(1)?;
    (host < 0xfffe).then(|| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + host))
}

/// The pod address after the `last` one handed out (by index, as [`pod_ip`] counts),
/// skipping those in use and wrapping around: CNI host-local's order. A freed address
/// is not handed out again at once, so a new pod never answers at an address that
/// other pods still map to the old pod's MAC in their neighbour caches (a re-created
/// pod reusing it would stay unreachable for as long as those entries live).
pub fn next_pod_ip(used: &BTreeSet<Ipv4Addr>, last: u32) -> Option<(u32, Ipv4Addr)> {
    const LAST_INDEX: u32 = 0xfffc;
    (last + 1..=LAST_INDEX)
        .chain(1..=last.min(LAST_INDEX))
        .filter_map(|n| pod_ip(n).map(|ip| (n, ip)))
        .find(|(_, ip)| !used.contains(ip))
}

/// The cluster namespace's `nat` table: each service port's VIP is DNATed to one of its
/// ready endpoints (chosen at random, as kube-proxy's iptables mode does); traffic that
/// was DNATed is masqueraded to the bridge address so replies come back through the
/// cluster namespace (pods share one L2 segment, and the bridge does not run iptables).
/// Ports without endpoints are refused in the `filter` table.
pub fn service_rules(reg: &Registry) -> String {
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:TESSERA-SERVICES - [0:0]\n",
    );
    let mut chains = String::new();
    let mut body = String::new();
    let mut refused = String::new();
    for svc in &reg.services {
        let Some(IpAddr::V4(vip)) = svc.cluster_ip else {
            continue;
        };
        for port in &svc.ports {
            let endpoints: Vec<_> = reg.endpoints(svc, port).collect();
            let comment = format!("{}/{}:{}", svc.namespace, svc.name, port.port);
            if endpoints.is_empty() {
                let _ = writeln!(
                    refused,
                    "-A TESSERA-NO-ENDPOINTS -d {vip}/32 -p tcp --dport {} -m comment --comment \"{comment} has no endpoints\" -j REJECT --reject-with icmp-port-unreachable",
                    port.port
                );
                continue;
            }
            let chain = chain_name("TSR-SVC-", &comment);
            let _ = writeln!(chains, ":{chain} - [0:0]");
            let _ = writeln!(
                body,
                "-A TESSERA-SERVICES -d {vip}/32 -p tcp --dport {} -m comment --comment \"{comment}\" -j {chain}",
                port.port
            );
            let n = endpoints.len();
            for (i, ep) in endpoints.iter().enumerate() {
                // Uniform choice: endpoint i takes 1/(n-i) of what the ones before left.
                let pick = if i + 1 < n {
                    format!(
                        "-m statistic --mode random --probability {:.10} ",
                        1.0 / (n - i) as f64
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    body,
                    "-A {chain} -p tcp {pick}-j DNAT --to-destination {}:{}",
                    ep.ip, ep.port
                );
            }
        }
    }
    nat.push_str(&chains);
    nat.push_str("-A PREROUTING -j TESSERA-SERVICES\n-A OUTPUT -j TESSERA-SERVICES\n");
    nat.push_str("-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE\n");
    nat.push_str(&body);
    nat.push_str("COMMIT\n");
    nat.push_str(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :TESSERA-NO-ENDPOINTS - [0:0]\n-A FORWARD -j TESSERA-NO-ENDPOINTS\n\
         -A OUTPUT -j TESSERA-NO-ENDPOINTS\n",
    );
    nat.push_str(&refused);
    nat.push_str("COMMIT\n");
    nat
}

/// iptables chain names are at most 28 characters: a prefix and a hash of what it serves.
fn chain_name(prefix: &str, what: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(what.as_bytes());
    let hex: String = h.iter().take(8).map(|b| format!("{b:02X}")).collect();
    format!("{prefix}{hex}")
}

/// A pod's `/etc/hosts`: itself, then every service: `name`, `name.ns`, `name.ns.svc`
/// and the FQDN for its own namespace's services, the qualified names for the others
/// (what a pod's DNS search path resolves in Kubernetes). Headless services resolve to
/// their ready endpoints.
pub fn hosts_file(reg: &Registry, namespace: &str, pod: &str, ip: Ipv4Addr) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file (tessera runtime).\n127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    let _ = writeln!(out, "{ip}\t{pod}");
    for svc in &reg.services {
        let fqdn = format!("{}.{}.svc.{CLUSTER_DOMAIN}", svc.name, svc.namespace);
        let mut names = vec![fqdn];
        names.push(format!("{}.{}.svc", svc.name, svc.namespace));
        names.push(format!("{}.{}", svc.name, svc.namespace));
        if svc.namespace == namespace {
            names.push(svc.name.clone());
        }
        let addrs: Vec<IpAddr> = match svc.cluster_ip {
            Some(vip) => vec![vip],
            None => {
                let mut ips: Vec<IpAddr> = svc
                    .ports
                    .iter()
                    .flat_map(|p| reg.endpoints(svc, p).map(|e| e.ip))
                    .collect();
                ips.sort();
                ips.dedup();
                ips
            }
        };
        for a in addrs {
            let _ = writeln!(out, "{a}\t{}", names.join(" "));
        }
    }
    out
}

/// A service port published on the host's loopback: NodePort and LoadBalancer services
/// on `127.0.0.1:<nodePort>`, LoadBalancer services also on `<ingress address>:<port>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Published {
    pub listen: std::net::SocketAddr,
    pub vip: Ipv4Addr,
    pub port: u16,
    /// `ns/name:port`, for logs.
    pub service: String,
}

pub fn published(objects: &Objects, ingress_ip: Ipv4Addr) -> Vec<Published> {
    let mut out = Vec::new();
    for s in objects.iter() {
        let Resource::Service(svc) = &s.resource else {
            continue;
        };
        if !matches!(
            svc.spec.r#type.as_deref(),
            Some("NodePort" | "LoadBalancer")
        ) {
            continue;
        }
        let Some(vip) = svc
            .spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        for p in &svc.spec.ports {
            let (Some(node_port), Ok(port)) = (
                p.node_port.and_then(|n| u16::try_from(n).ok()),
                u16::try_from(p.port),
            ) else {
                continue;
            };
            let service = format!(
                "{}/{}:{}",
                svc.metadata.namespace.as_deref().unwrap_or("default"),
                svc.metadata.name,
                p.port
            );
            if svc.spec.r#type.as_deref() == Some("LoadBalancer") {
                out.push(Published {
                    listen: (ingress_ip, port).into(),
                    vip,
                    port,
                    service: service.clone(),
                });
            }
            out.push(Published {
                listen: (Ipv4Addr::LOCALHOST, node_port).into(),
                vip,
                port,
                service,
            });
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_control::Op;
    use tessera_model::{load_str, LoadOptions};

    const MESH: &str = "
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: full}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: full}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: legacy}
spec:
  clusterIP: None
  selector: {app: httpbin}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: gw, namespace: full}
spec:
  type: LoadBalancer
  selector: {app: httpbin}
  ports: [{name: https, port: 443, targetPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: httpbin-1, namespace: full, labels: {app: httpbin}}
spec: {containers: [{name: httpbin, image: kennethreitz/httpbin, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.244.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: httpbin-2, namespace: full, labels: {app: httpbin}}
spec: {containers: [{name: httpbin, image: kennethreitz/httpbin}]}
status: {phase: Running, podIP: 10.244.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: starting, namespace: full, labels: {app: httpbin}}
spec: {containers: [{name: httpbin, image: kennethreitz/httpbin}]}
status:
  phase: Running
  podIP: 10.244.0.4
  conditions: [{type: Ready, status: 'False'}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: legacy, labels: {app: httpbin}}
spec: {containers: [{name: db, image: db}]}
status: {phase: Running, podIP: 10.244.0.9}
";

    fn objects() -> Objects {
        let objects = Objects::default();
        let mut ops = vec![];
        for ns in ["full", "legacy"] {
            ops.push(Op::Create {
                origin: ns.into(),
                resource: tessera_control::objects::namespace_resource(ns),
            });
        }
        let report = load_str(
            std::path::Path::new("mesh.yaml"),
            MESH,
            &LoadOptions::default(),
        );
        assert!(
            !report.has_errors(),
            "{:?}",
            report.errors().collect::<Vec<_>>()
        );
        for l in report.documents {
            let mut r = l.resource;
            let status = match &mut r {
                Resource::Pod(p) => p.status.take(),
                _ => None,
            };
            let key = tessera_control::ObjectKey::of(&r);
            ops.push(Op::Apply {
                origin: "mesh.yaml".into(),
                resource: r,
            });
            if let Some(status) = status {
                ops.push(Op::Status {
                    key,
                    status: serde_json::to_value(status).unwrap(),
                });
            }
        }
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        objects.plan(ops, now).unwrap().next
    }

    #[test]
    fn services_dnat_to_ready_endpoints_only() {
        let objects = objects();
        let reg = Registry::from_objects(&objects);
        let rules = service_rules(&reg);
        let vip = reg
            .services
            .iter()
            .find(|s| s.name == "httpbin")
            .and_then(|s| s.cluster_ip)
            .unwrap();
        assert!(
            rules.contains(&format!(
                "-d {vip}/32 -p tcp --dport 8000 -m comment --comment \"full/httpbin:8000\""
            )),
            "{rules}"
        );
        assert!(rules.contains("--probability 0.5000000000 -j DNAT --to-destination 10.244.0.2:80"));
        assert!(rules.contains("-j DNAT --to-destination 10.244.0.3:80\n"));
        // Not ready: not an endpoint.
        assert!(!rules.contains("10.244.0.4"), "{rules}");
        assert!(rules.contains("full/empty:80 has no endpoints"));
        // Headless: no VIP, no NAT.
        assert!(!rules.contains("legacy/db"));
        assert!(rules.contains("-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE"));
    }

    #[test]
    fn hosts_resolve_short_names_in_the_pods_namespace_only() {
        let objects = objects();
        let reg = Registry::from_objects(&objects);
        let vip = reg
            .services
            .iter()
            .find(|s| s.name == "httpbin")
            .unwrap()
            .cluster_ip
            .unwrap();
        let full = hosts_file(&reg, "full", "sleep-1", Ipv4Addr::new(10, 244, 0, 7));
        assert!(full.contains("10.244.0.7\tsleep-1\n"));
        assert!(
            full.contains(&format!(
                "{vip}\thttpbin.full.svc.cluster.local httpbin.full.svc httpbin.full httpbin\n"
            )),
            "{full}"
        );
        let legacy = hosts_file(&reg, "legacy", "sleep-2", Ipv4Addr::new(10, 244, 0, 8));
        assert!(
            legacy.contains(&format!(
                "{vip}\thttpbin.full.svc.cluster.local httpbin.full.svc httpbin.full\n"
            )),
            "{legacy}"
        );
        // Headless: the ready endpoints' addresses.
        assert!(
            legacy.contains("10.244.0.9\tdb.legacy.svc.cluster.local db.legacy.svc db.legacy db\n"),
            "{legacy}"
        );
    }

    #[test]
    fn load_balancers_are_published_on_their_node_ports() {
        let objects = objects();
        let p = published(&objects, Ipv4Addr::new(127, 0, 0, 7));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p
            .iter()
            .all(|p| p.port == 443 && p.service == "full/gw:443"));
        assert!(p
            .iter()
            .any(|p| p.listen.ip() == Ipv4Addr::LOCALHOST
                && (30000..=32767).contains(&p.listen.port())));
        assert!(p
            .iter()
            .any(|p| p.listen == "127.0.0.7:443".parse().unwrap()));
    }

    #[test]
    fn pod_addresses_stay_in_the_pod_network() {
        assert_eq!(pod_ip(1), Some(Ipv4Addr::new(10, 244, 0, 2)));
        assert_eq!(pod_ip(255), Some(Ipv4Addr::new(10, 244, 1, 0)));
        assert_eq!(pod_ip(0xfffc), Some(Ipv4Addr::new(10, 244, 255, 253)));
        assert_eq!(pod_ip(0xfffd), None);
    }

    #[test]
    fn freed_pod_addresses_are_not_handed_out_again_at_once() {
        let ip = |n| pod_ip(n).unwrap();
        let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
        assert_eq!(next_pod_ip(&used, 0), Some((1, ip(1))));
        used.insert(ip(1));
        used.insert(ip(2));
        // Pod 1 is deleted; the next pod gets a fresh address, not 10.244.0.2.
        used.remove(&ip(1));
        assert_eq!(next_pod_ip(&used, 2), Some((3, ip(3))));
        // At the end of the range it wraps around to the free ones.
        used.insert(ip(0xfffc));
        assert_eq!(next_pod_ip(&used, 0xfffb), Some((1, ip(1))));
        // Full: none.
        let all: BTreeSet<Ipv4Addr> = (1..=0xfffc).map(ip).collect();
        assert_eq!(next_pod_ip(&all, 7), None);
    }
}
