//! The operator API's messages: JSON over HTTP/1.1 on `<state dir>/api.sock`. The CLI sends
//! manifests as text so the control plane reads them with the same loader (file, line and
//! field path in every error) and applies a batch whole or not at all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::objects::Outcome;
pub use crate::push::ProxyStatusRow;

pub const API_SOCKET: &str = "api.sock";

pub const PUSH_SOCKET: &str = "xds.sock";

pub const CA_SOCKET: &str = "ca.sock";

pub const STORE_FILE: &str = "store.db";

/// A manifest file (or standard input) as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    /// Shown in messages: the path as given, or `<stdin>`.
    pub name: String,
    pub text: String,
}

/// An object named on the command line: the kind as typed (`svc`, `pa`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub documents: Vec<Document>,
    /// `-n NS`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `create`: an existing object is an error instead of an update.
    #[serde(default)]
    pub create: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// `delete -f`.
    #[serde(default)]
    pub documents: Vec<Document>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// `delete KIND NAME...`.
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub ignore_not_found: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelRequest {
    pub target: Target,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub overwrite: bool,
}

/// The runtime reports an object's status (a pod's IP and phase).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusRequest {
    pub target: Target,
    pub status: serde_json::Value,
}

/// A successful change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeResponse {
    pub outcomes: Vec<Outcome>,
    /// Problems that did not stop the change (validation warnings).
    #[serde(default)]
    pub warnings: Vec<String>,
    pub revision: u64,
}

/// A refused request: every reason, nothing changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRequest {
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `None`: the default namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub all_namespaces: bool,
    /// `-l`: a label query.
    #[serde(default)]
    pub selector: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetResponse {
    /// The kind's canonical name (`Service`).
    pub kind: String,
    pub namespaced: bool,
    /// The namespace listed (for "No resources found in NS namespace.").
    pub namespace: Option<String>,
    pub items: Vec<serde_json::Value>,
    pub revision: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account: String,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigRequest {
    /// `pod.namespace`.
    pub node_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub revision: u64,
    pub state_dir: String,
    pub trust_domain: String,
}

/// `tessera explain FROM TO[:PORT]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainRequest {
    /// `pod.ns`, `pod/pod.ns` or `deploy/name.ns`.
    pub from: String,
    /// `name.ns` (or the service's host).
    pub to: String,
    #[serde(default)]
    pub port: Option<u16>,
}

/// `tessera check reachability`: the namespaces (all but the mesh's own when empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReachabilityRequest {
    #[serde(default)]
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReachabilityResponse {
    pub revision: u64,
    pub namespaces: Vec<String>,
    pub reach: Vec<crate::insight::PortReach>,
}

/// `tessera analyze [--what-if FILE...]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnalyzeRequest {
    /// The change to evaluate without applying it; empty: analyze what is stored.
    #[serde(default)]
    pub documents: Vec<Document>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalyzeResponse {
    pub revision: u64,
    /// What is stored now (or, with a change, what it would be).
    pub findings: Vec<crate::insight::Finding>,
    /// With a change: the hops it alters, and the objects it would create or update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what_if: Option<crate::insight::WhatIf>,
    #[serde(default)]
    pub planned: Vec<Outcome>,
    /// Findings the change would add.
    #[serde(default)]
    pub new_findings: Vec<crate::insight::Finding>,
}
