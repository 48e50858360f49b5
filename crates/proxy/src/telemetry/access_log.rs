//! The access log: one line per TCP connection or HTTP request, on the `tessera::access`
//! target, when the snapshot turns it on. Written by [`super::ConnectionResult`] and
//! [`super::RequestResult`] as they end; fields that do not apply are `-`.

use std::net::SocketAddr;
use std::time::Duration;

use super::TlsUsed;

/// One line's fields.
#[derive(Debug, Clone, Default)]
pub struct AccessLine {
    /// `inbound`, `outbound` or `gateway`.
    pub side: &'static str,
    pub src: Option<SocketAddr>,
    pub src_identity: Option<String>,
    /// Where it went: the app's address, a service (`host:port`), or a gateway route's
    /// destination.
    pub dst: Option<String>,
    /// The endpoint an outbound request reached.
    pub endpoint: Option<SocketAddr>,
    pub tls: Option<TlsUsed>,
    /// Gateway: the server (filter chain) and the request's authority.
    pub server: Option<String>,
    pub authority: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// Envoy-style response flags (`NR route_not_found`, ...).
    pub flags: &'static str,
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// An HTTP request that was answered with `code`.
pub fn request(line: &AccessLine, code: u16, took: Duration) {
    tracing::info!(
        target: "tessera::access",
        direction = line.side,
        src = %line.src.map_or("-".to_string(), |s| s.to_string()),
        src_identity = or_dash(&line.src_identity),
        dst = or_dash(&line.dst),
        endpoint = %line.endpoint.map_or("-".to_string(), |a| a.to_string()),
        tls = line.tls.map_or("-", TlsUsed::label),
        server = or_dash(&line.server),
        authority = or_dash(&line.authority),
        method = or_dash(&line.method),
        path = or_dash(&line.path),
        code,
        flags = if line.flags.is_empty() { "-" } else { line.flags },
        duration_ms = took.as_secs_f64() * 1000.0,
    );
}

/// Opaque bytes forwarded until the connection ended (`result`: `ok`, or what cut it).
pub fn tcp(line: &AccessLine, result: &str, sent: u64, received: u64, took: Duration) {
    tracing::info!(
        target: "tessera::access",
        direction = line.side,
        src = %line.src.map_or("-".to_string(), |s| s.to_string()),
        src_identity = or_dash(&line.src_identity),
        dst = or_dash(&line.dst),
        tls = line.tls.map_or("-", TlsUsed::label),
        protocol = "tcp",
        result,
        bytes_sent = sent,
        bytes_received = received,
        duration_ms = took.as_secs_f64() * 1000.0,
    );
}
