//! Connections a proxy has seen, per peer and outcome: what its admin `/edges` serves
//! and `tessera edges` joins across proxies.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeDirection {
    /// Accepted from a client.
    Inbound,
    /// Opened to an endpoint.
    Outbound,
}

/// Connections with one peer that ended the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRecord {
    pub direction: EdgeDirection,
    /// The client's address (inbound) or the endpoint's (outbound).
    pub peer: IpAddr,
    /// The server side's port: the local port (inbound) or the endpoint's (outbound).
    pub port: u16,
    /// `mtls`, `plaintext`, `simple`, `mutual` or `app_tls_passthrough`.
    pub tls: String,
    /// The verified identity of the peer (mTLS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_identity: Option<String>,
    /// `None` when the connection went through; else the refusal or failure label
    /// (`strict_plaintext`, `connect_failed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Why, in words: the refusal, or why this TLS was used.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub connections: u64,
    /// Unix seconds of the latest connection.
    pub last_seen: u64,
}

/// A proxy's `/edges`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeReport {
    /// `pod.namespace`.
    pub node: String,
    /// The proxy's own SPIFFE identity.
    pub identity: String,
    pub edges: Vec<EdgeRecord>,
    /// Connections not recorded because the table was full.
    #[serde(default)]
    pub dropped: u64,
}
