//! The connections this proxy has seen, per peer, port, TLS and outcome: admin `/edges`.
//! Recorded once per connection (not per request), under one short lock; the table is
//! bounded, and what does not fit is counted as dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tessera_contract::edges::{EdgeDirection, EdgeRecord, EdgeReport};

use super::TlsUsed;

/// More distinct edges than this are counted, not kept.
const MAX_EDGES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    direction: EdgeDirection,
    peer: IpAddr,
    port: u16,
    tls: TlsUsed,
    peer_identity: Option<String>,
    failure: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Seen {
    connections: u64,
    last_seen: u64,
    reason: String,
}

#[derive(Default)]
pub struct Edges {
    table: Mutex<HashMap<Key, Seen>>,
    dropped: AtomicU64,
}

/// One connection, as [`Edges::record`] takes it.
pub struct Connection<'a> {
    pub direction: EdgeDirection,
    pub peer: IpAddr,
    pub port: u16,
    pub tls: TlsUsed,
    pub peer_identity: Option<&'a str>,
    /// The refusal or failure label; `None` when it went through.
    pub failure: Option<&'static str>,
}

impl<'a> Connection<'a> {
    /// Accepted from `peer` on the local `port`, went through.
    pub fn inbound(peer: SocketAddr, port: u16, tls: TlsUsed) -> Self {
        Connection {
            direction: EdgeDirection::Inbound,
            peer: peer.ip(),
            port,
            tls,
            peer_identity: None,
            failure: None,
        }
    }

    /// Opened to `endpoint`, went through.
    pub fn outbound(endpoint: SocketAddr, tls: TlsUsed) -> Self {
        Connection {
            direction: EdgeDirection::Outbound,
            peer: endpoint.ip(),
            port: endpoint.port(),
            tls,
            peer_identity: None,
            failure: None,
        }
    }

    /// Refused or failed, with its label.
    pub fn failed(self, label: &'static str) -> Self {
        Connection {
            failure: Some(label),
            ..self
        }
    }

    /// The peer's verified identity.
    pub fn identified(self, identity: Option<&'a str>) -> Self {
        Connection {
            peer_identity: identity,
            ..self
        }
    }
}

impl Edges {
    /// Counts one connection; `reason` is evaluated only for a new edge.
    pub fn record(&self, c: Connection<'_>, reason: impl FnOnce() -> String) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let key = Key {
            direction: c.direction,
            peer: c.peer,
            port: c.port,
            tls: c.tls,
            peer_identity: c.peer_identity.map(str::to_string),
            failure: c.failure,
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = table.get_mut(&key) {
            seen.connections += 1;
            seen.last_seen = now;
            return;
        }
        if table.len() >= MAX_EDGES {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        table.insert(
            key,
            Seen {
                connections: 1,
                last_seen: now,
                reason: reason(),
            },
        );
    }

    pub fn report(&self, node: String, identity: String) -> EdgeReport {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut edges: Vec<EdgeRecord> = table
            .iter()
            .map(|(k, s)| EdgeRecord {
                direction: k.direction,
                peer: k.peer,
                port: k.port,
                tls: k.tls.label().to_string(),
                peer_identity: k.peer_identity.clone(),
                failure: k.failure.map(str::to_string),
                reason: s.reason.clone(),
                connections: s.connections,
                last_seen: s.last_seen,
            })
            .collect();
        edges.sort_by(|a, b| {
            (a.direction, a.peer, a.port, &a.tls, &a.failure).cmp(&(
                b.direction,
                b.peer,
                b.port,
                &b.tls,
                &b.failure,
            ))
        });
        EdgeReport {
            node,
            identity,
            edges,
            dropped: self.dropped.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(peer: &str, failure: Option<&'static str>) -> Connection<'static> {
        Connection {
            direction: EdgeDirection::Inbound,
            peer: peer.parse().unwrap(),
            port: 80,
            tls: TlsUsed::Plaintext,
            peer_identity: None,
            failure,
        }
    }

    #[test]
    fn connections_are_counted_per_peer_and_outcome() {
        let edges = Edges::default();
        edges.record(conn("10.0.0.1", None), || "first".into());
        edges.record(conn("10.0.0.1", None), || {
            unreachable!("an edge's reason is kept")
        });
        edges.record(conn("10.0.0.1", Some("strict_plaintext")), || {
            "refused".into()
        });
        let r = edges.report("a.ns".into(), "spiffe://td/ns/ns/sa/a".into());
        let counts: Vec<(u64, Option<&str>, &str)> = r
            .edges
            .iter()
            .map(|e| (e.connections, e.failure.as_deref(), e.reason.as_str()))
            .collect();
        assert_eq!(
            counts,
            [(2, None, "first"), (1, Some("strict_plaintext"), "refused")]
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let edges = Edges::default();
        for i in 0..(MAX_EDGES as u32 + 10) {
            let peer = IpAddr::from(i.to_be_bytes());
            edges.record(
                Connection {
                    peer,
                    ..conn("0.0.0.0", None)
                },
                String::new,
            );
        }
        let r = edges.report(String::new(), String::new());
        assert_eq!(r.edges.len(), MAX_EDGES);
        assert_eq!(r.dropped, 10);
    }
}
