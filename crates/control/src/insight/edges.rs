//! `tessera edges`: the connections proxies have seen, joined across both ends. A hop seen
//! by the client's sidecar and the server's is one edge; a hop seen by one side only
//! (a client or server without a sidecar) is still an edge, named from that side.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tessera_contract::edges::{EdgeDirection, EdgeReport};

/// One row of `tessera edges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// `pod.namespace`, or the address when no pod has it.
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub tls: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// Mesh mTLS, and the connection went through.
    pub secured: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub reason: String,
    pub connections: u64,
    pub last_seen: u64,
    /// Which proxies saw it: `client`, `server` or both.
    pub seen_by: Vec<String>,
}

type EdgeKey = (String, String, u16, String, Option<String>);

/// Joins every proxy's report; `pods` maps pod addresses to `pod.namespace`.
pub fn join(reports: &[EdgeReport], pods: &BTreeMap<IpAddr, String>) -> Vec<Edge> {
    let name = |ip: &IpAddr| pods.get(ip).cloned().unwrap_or_else(|| ip.to_string());
    let mut edges: BTreeMap<EdgeKey, Edge> = BTreeMap::new();
    for report in reports {
        for r in &report.edges {
            let (src, dst, side) = match r.direction {
                EdgeDirection::Inbound => (name(&r.peer), report.node.clone(), "server"),
                EdgeDirection::Outbound => (report.node.clone(), name(&r.peer), "client"),
            };
            let mtls = r.tls == "mtls";
            let (client_id, server_id) = match r.direction {
                EdgeDirection::Inbound => (
                    r.peer_identity.clone(),
                    mtls.then(|| report.identity.clone()),
                ),
                EdgeDirection::Outbound => (
                    mtls.then(|| report.identity.clone()),
                    r.peer_identity.clone(),
                ),
            };
            let key = (
                src.clone(),
                dst.clone(),
                r.port,
                r.tls.clone(),
                r.failure.clone(),
            );
            let e = edges.entry(key).or_insert_with(|| Edge {
                src,
                dst,
                port: r.port,
                tls: r.tls.clone(),
                client_id: None,
                server_id: None,
                secured: mtls && r.failure.is_none(),
                failure: r.failure.clone(),
                reason: String::new(),
                connections: 0,
                last_seen: 0,
                seen_by: Vec::new(),
            });
            // The server's view of who the client is wins, and the client's of the server.
            if r.direction == EdgeDirection::Inbound || e.client_id.is_none() {
                e.client_id = client_id.or(e.client_id.take());
            }
            if r.direction == EdgeDirection::Outbound || e.server_id.is_none() {
                e.server_id = server_id.or(e.server_id.take());
            }
            // The client's sidecar pools connections: the server counts them all.
            e.connections = e.connections.max(r.connections);
            e.last_seen = e.last_seen.max(r.last_seen);
            if !r.reason.is_empty() && !e.reason.contains(&r.reason) {
                if !e.reason.is_empty() {
                    e.reason.push_str("; ");
                }
                e.reason.push_str(&r.reason);
            }
            if !e.seen_by.iter().any(|s| s == side) {
                e.seen_by.push(side.to_string());
                e.seen_by.sort();
            }
        }
    }
    edges.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_contract::edges::EdgeRecord;

    fn record(
        direction: EdgeDirection,
        peer: &str,
        tls: &str,
        id: Option<&str>,
        failure: Option<&str>,
        n: u64,
    ) -> EdgeRecord {
        EdgeRecord {
            direction,
            peer: peer.parse().unwrap(),
            port: 80,
            tls: tls.into(),
            peer_identity: id.map(str::to_string),
            failure: failure.map(str::to_string),
            reason: String::new(),
            connections: n,
            last_seen: 100,
        }
    }

    #[test]
    fn both_ends_of_a_hop_make_one_edge() {
        let sleep = "spiffe://cluster.local/ns/full/sa/sleep";
        let httpbin = "spiffe://cluster.local/ns/full/sa/httpbin";
        let reports = [
            EdgeReport {
                node: "sleep-0.full".into(),
                identity: sleep.into(),
                edges: vec![
                    record(
                        EdgeDirection::Outbound,
                        "10.0.0.2",
                        "mtls",
                        Some(httpbin),
                        None,
                        1,
                    ),
                    record(
                        EdgeDirection::Outbound,
                        "10.0.0.9",
                        "plaintext",
                        None,
                        None,
                        2,
                    ),
                ],
                dropped: 0,
            },
            EdgeReport {
                node: "httpbin-0.full".into(),
                identity: httpbin.into(),
                edges: vec![
                    record(
                        EdgeDirection::Inbound,
                        "10.0.0.1",
                        "mtls",
                        Some(sleep),
                        None,
                        3,
                    ),
                    record(
                        EdgeDirection::Inbound,
                        "10.0.0.7",
                        "plaintext",
                        None,
                        Some("strict_plaintext"),
                        4,
                    ),
                ],
                dropped: 0,
            },
        ];
        let pods: BTreeMap<IpAddr, String> = [
            ("10.0.0.1", "sleep-0.full"),
            ("10.0.0.2", "httpbin-0.full"),
            ("10.0.0.7", "sleep-0.legacy"),
            ("10.0.0.9", "httpbin-0.legacy"),
        ]
        .into_iter()
        .map(|(ip, n)| (ip.parse().unwrap(), n.to_string()))
        .collect();
        let edges = join(&reports, &pods);
        let rows: Vec<(&str, &str, bool, u64, Vec<String>)> = edges
            .iter()
            .map(|e| {
                (
                    e.src.as_str(),
                    e.dst.as_str(),
                    e.secured,
                    e.connections,
                    e.seen_by.clone(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "sleep-0.full",
                    "httpbin-0.full",
                    true,
                    3,
                    vec!["client".to_string(), "server".to_string()]
                ),
                (
                    "sleep-0.full",
                    "httpbin-0.legacy",
                    false,
                    2,
                    vec!["client".to_string()]
                ),
                (
                    "sleep-0.legacy",
                    "httpbin-0.full",
                    false,
                    4,
                    vec!["server".to_string()]
                ),
            ]
        );
        assert_eq!(edges[0].client_id.as_deref(), Some(sleep));
        assert_eq!(edges[0].server_id.as_deref(), Some(httpbin));
        assert_eq!(edges[2].failure.as_deref(), Some("strict_plaintext"));
        assert_eq!(edges[2].client_id, None);
    }
}
