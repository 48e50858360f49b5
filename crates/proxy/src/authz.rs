//! AuthorizationPolicy applied: each HTTP request, and each TCP connection once it is
//! accepted (after the mTLS handshake), is decided by the workload's compiled policies
//! with `tessera_contract::authz::evaluate`, the function `tessera explain` calls too.
//! Every decision is counted by policy; a denial is logged here, on the side that refused,
//! with the policy and the reason. Without policies nothing is evaluated.

use std::net::IpAddr;

use ::http::{HeaderMap, Method};
use tessera_contract::authz::{evaluate, Attributes, AuthzAction, HttpAttributes};

use crate::shared::Shared;

/// The body of a denied HTTP request, as Envoy's RBAC filter answers it.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// What a connection tells a decision.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub source: IpAddr,
    /// The original client (X-Forwarded-For, where trusted); else the source.
    pub remote: IpAddr,
    /// The verified identity, `spiffe://...` or without the scheme.
    pub identity: Option<&'a str>,
    pub local: IpAddr,
    pub port: u16,
    pub sni: Option<&'a str>,
}

/// What an HTTP request adds.
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
}

/// A denial: which policy (if one denied outright) and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub policy: Option<String>,
    pub reason: String,
}

/// Decides a request (or, with `request` `None`, a TCP connection). `Ok` when allowed
/// or when the workload has no policy.
pub fn decide(shared: &Shared, peer: &Peer, request: Option<&Request>) -> Result<(), Denied> {
    let snap = shared.snapshot.load();
    let authz = &snap.config.authorization;
    if authz.is_empty() {
        return Ok(());
    }
    let principal = peer
        .identity
        .map(|id| id.strip_prefix("spiffe://").unwrap_or(id));
    let attributes = Attributes {
        source_ip: peer.source,
        remote_ip: peer.remote,
        principal,
        destination_ip: peer.local,
        destination_port: peer.port,
        sni: peer.sni,
        http: request.map(|r| HttpAttributes {
            method: r.method.as_str(),
            path: r.path,
            host: r.host,
            headers: r.headers,
        }),
    };
    let verdict = evaluate(authz, &attributes);
    let metrics = &shared.telemetry.metrics;
    let policy = verdict.by.map(|m| m.policy).unwrap_or("");
    metrics.authorization(policy, verdict.allowed);
    if let Some(audit) = verdict.audit {
        tracing::info!(direction = "inbound", src = %peer.source, identity = principal.unwrap_or(""), port = peer.port, policy = audit.policy, rule = audit.rule, "AuthorizationPolicy AUDIT matched");
    }
    if verdict.allowed {
        if let Some(by) = verdict.by {
            tracing::debug!(direction = "inbound", src = %peer.source, identity = principal.unwrap_or(""), port = peer.port, policy = by.policy, rule = by.rule, "allowed by authorization policy");
        }
        return Ok(());
    }
    let reason = verdict.reason();
    tracing::warn!(
        direction = "inbound",
        src = %peer.source,
        identity = principal.unwrap_or(""),
        port = peer.port,
        method = request.map(|r| r.method.as_str()).unwrap_or(""),
        path = request.map(|r| r.path).unwrap_or(""),
        policy = verdict.by.filter(|m| m.action == AuthzAction::Deny).map(|m| m.policy).unwrap_or(""),
        reason = %reason,
        "{}",
        if request.is_some() { "request denied by authorization policy (403)" } else { "connection denied by authorization policy (closed)" }
    );
    Err(Denied {
        policy: verdict.by.map(|m| m.policy.to_string()),
        reason,
    })
}
