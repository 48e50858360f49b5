//! One result per downstream connection and per HTTP request. The traffic path says what
//! happened through them; they count it, record the edge, log a refusal on this side with
//! its reason, and write the access-log line when they end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tessera_contract::inbound::Refusal;

use super::access_log::{self, AccessLine};
use super::edges::Connection;
use super::{Direction, Telemetry, TlsUsed};

/// One downstream connection, from accept to close: counted as opened (and active) when
/// made, as closed when dropped; its first outcome (accepted or refused) is its edge.
/// Opaque bytes it forwarded are logged when it ends.
pub struct ConnectionResult {
    telemetry: Arc<Telemetry>,
    direction: Direction,
    /// `inbound`, `outbound` or `gateway`, in logs.
    side: &'static str,
    peer: SocketAddr,
    /// The local port it was accepted for.
    port: u16,
    /// Whether its outcomes are edges (sidecars' inbound connections).
    records_edges: bool,
    started: Instant,
    /// One edge per connection: the first outcome recorded is it.
    edge_recorded: AtomicBool,
    forwarded: Mutex<Option<Forwarded>>,
}

struct Forwarded {
    line: AccessLine,
    result: &'static str,
    sent: u64,
    received: u64,
}

impl ConnectionResult {
    /// A connection a sidecar accepted: inbound toward workload port `port`, or outbound.
    pub fn new(
        telemetry: Arc<Telemetry>,
        direction: Direction,
        peer: SocketAddr,
        port: u16,
    ) -> ConnectionResult {
        let side = direction.label();
        ConnectionResult::opened(
            telemetry,
            direction,
            side,
            peer,
            port,
            direction == Direction::Inbound,
        )
    }

    /// A connection on gateway port `port` (counted as inbound; gateways report no edges).
    pub fn gateway(telemetry: Arc<Telemetry>, peer: SocketAddr, port: u16) -> ConnectionResult {
        ConnectionResult::opened(telemetry, Direction::Inbound, "gateway", peer, port, false)
    }

    fn opened(
        telemetry: Arc<Telemetry>,
        direction: Direction,
        side: &'static str,
        peer: SocketAddr,
        port: u16,
        records_edges: bool,
    ) -> ConnectionResult {
        telemetry.metrics.connection_opened(direction);
        ConnectionResult {
            telemetry,
            direction,
            side,
            peer,
            port,
            records_edges,
            started: Instant::now(),
            edge_recorded: AtomicBool::new(false),
            forwarded: Mutex::new(None),
        }
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The connection went through with `tls` (and the peer's verified identity);
    /// `reason` says why, for a new edge.
    pub fn accepted(&self, tls: TlsUsed, identity: Option<&str>, reason: impl FnOnce() -> String) {
        if self.first_edge() {
            let edge = Connection::inbound(self.peer, self.port, tls).identified(identity);
            self.telemetry.edges.record(edge, reason);
        }
    }

    /// The connection is refused: counted by reason, recorded as a failed edge (`tls`:
    /// what the client spoke), and logged here with `detail` (what exactly failed).
    pub fn refused(&self, refusal: Refusal, tls: TlsUsed, detail: &str) {
        self.telemetry.metrics.refusal(refusal);
        if self.first_edge() {
            let edge = Connection::inbound(self.peer, self.port, tls).failed(refusal.label());
            self.telemetry.edges.record(edge, || detail.to_string());
        }
        tracing::warn!(
            direction = self.side,
            src = %self.peer,
            port = self.port,
            refusal = refusal.label(),
            reason = detail,
            "{}",
            refused_message(refusal)
        );
    }

    /// The connection is denied by an AuthorizationPolicy after it was accepted: counted
    /// and recorded as a failed edge; the decision itself was logged where it was made.
    pub fn denied(&self, tls: TlsUsed, reason: &str) {
        let refusal = Refusal::AuthorizationDenied;
        self.telemetry.metrics.refusal(refusal);
        if self.first_edge() {
            let edge = Connection::inbound(self.peer, self.port, tls).failed(refusal.label());
            self.telemetry.edges.record(edge, || reason.to_string());
        }
    }

    /// Whether this connection's edge is still to be recorded (and now is).
    fn first_edge(&self) -> bool {
        self.records_edges && !self.edge_recorded.swap(true, Ordering::Relaxed)
    }

    /// A TLS handshake on this connection, toward the downstream client or an endpoint.
    pub fn handshake(&self, direction: Direction, tls: TlsUsed, ok: bool) {
        self.telemetry.metrics.handshake(direction, tls, ok);
    }

    /// Opaque bytes were forwarded until the connection ended; the line is logged when
    /// the connection is dropped.
    pub fn forwarded(&self, line: AccessLine, result: &'static str, sent: u64, received: u64) {
        *self.forwarded.lock().unwrap_or_else(|e| e.into_inner()) = Some(Forwarded {
            line: AccessLine {
                side: self.side,
                src: Some(self.peer),
                ..line
            },
            result,
            sent,
            received,
        });
    }
}

impl Drop for ConnectionResult {
    fn drop(&mut self) {
        self.telemetry.metrics.connection_closed(self.direction);
        let forwarded = self.forwarded.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = forwarded {
            if self.telemetry.access_log() {
                access_log::tcp(
                    &f.line,
                    f.result,
                    f.sent,
                    f.received,
                    self.started.elapsed(),
                );
            }
        }
    }
}

/// What a refusal is logged as on the refusing side.
fn refused_message(r: Refusal) -> &'static str {
    match r {
        Refusal::Handshake => "mesh mTLS handshake refused",
        Refusal::TlsHandshake => "TLS handshake refused",
        Refusal::TlsUnavailable => "TLS refused: the certificate is not available",
        Refusal::NotHttp => "request refused (400)",
        Refusal::StrictPlaintext
        | Refusal::StrictSilent
        | Refusal::NonMeshTlsOnHttpPort
        | Refusal::NoTlsChain => "connection refused (reset)",
        Refusal::NoRoute => "connection closed: no route",
        Refusal::AuthorizationDenied => "connection denied by authorization policy (closed)",
    }
}

/// One HTTP request: counted by status code and logged when it is answered. Its access
/// line is built only when the access log is on.
pub struct RequestResult {
    telemetry: Arc<Telemetry>,
    direction: Direction,
    started: Instant,
    line: Option<AccessLine>,
}

impl RequestResult {
    pub fn new(telemetry: Arc<Telemetry>, direction: Direction) -> RequestResult {
        RequestResult {
            telemetry,
            direction,
            started: Instant::now(),
            line: None,
        }
    }

    /// What the access log says about the request (before it is sent on).
    pub fn describe(&mut self, line: impl FnOnce() -> AccessLine) {
        if self.telemetry.access_log() {
            self.line = Some(line());
        }
    }

    /// The access line, to add what was learned on the way (the endpoint, the TLS).
    pub fn line_mut(&mut self) -> Option<&mut AccessLine> {
        self.line.as_mut()
    }

    /// The request was answered with `code`.
    pub fn answered(self, code: u16) {
        self.telemetry.metrics.request(self.direction, code);
        if let Some(line) = &self.line {
            access_log::request(line, code, self.started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.244.0.7:40000".parse().unwrap()
    }

    #[test]
    fn a_connection_is_one_edge_and_counted_open_then_closed() {
        let telemetry = Arc::new(Telemetry::default());
        let result = ConnectionResult::new(telemetry.clone(), Direction::Inbound, peer(), 80);
        assert_eq!(telemetry.metrics.active(), 1);
        // A plaintext HTTP connection records its edge at every request; it counts once.
        for _ in 0..3 {
            result.accepted(TlsUsed::Plaintext, None, || "accepted".into());
        }
        // Bytes that are not HTTP after a request do not make a second edge.
        result.refused(Refusal::NotHttp, TlsUsed::Plaintext, "not HTTP");
        drop(result);
        assert_eq!(telemetry.metrics.active(), 0);
        let report = telemetry.edges.report("n".into(), "id".into());
        assert_eq!(report.edges.len(), 1);
        assert_eq!(report.edges[0].connections, 1);
        assert_eq!(report.edges[0].failure, None);
        assert_eq!(telemetry.metrics.refusals_of(Refusal::NotHttp), 1);
    }

    #[test]
    fn a_refused_connection_is_a_failed_edge_gateways_report_none() {
        let telemetry = Arc::new(Telemetry::default());
        let sidecar = ConnectionResult::new(telemetry.clone(), Direction::Inbound, peer(), 80);
        sidecar.refused(Refusal::StrictPlaintext, TlsUsed::Plaintext, "STRICT");
        let gateway = ConnectionResult::gateway(telemetry.clone(), peer(), 8443);
        gateway.refused(Refusal::NoTlsChain, TlsUsed::Simple, "no chain");
        let report = telemetry.edges.report("n".into(), "id".into());
        assert_eq!(report.edges.len(), 1);
        assert_eq!(report.edges[0].failure.as_deref(), Some("strict_plaintext"));
        assert_eq!(report.edges[0].reason, "STRICT");
        assert_eq!(telemetry.metrics.refusals_of(Refusal::NoTlsChain), 1);
    }

    #[test]
    fn metrics_keep_their_names_and_labels() {
        let telemetry = Arc::new(Telemetry::default());
        let result = ConnectionResult::new(telemetry.clone(), Direction::Outbound, peer(), 80);
        result.handshake(Direction::Outbound, TlsUsed::Mesh, true);
        RequestResult::new(telemetry.clone(), Direction::Outbound).answered(200);
        RequestResult::new(telemetry.clone(), Direction::Outbound).answered(200);
        telemetry.metrics.refusal(Refusal::StrictPlaintext);
        telemetry.metrics.config(true);
        let text = telemetry.metrics.render();
        for line in [
            "tessera_connections_total{direction=\"outbound\"} 1",
            "tessera_connections_active{direction=\"outbound\"} 1",
            "tessera_requests_total{direction=\"outbound\",code=\"200\"} 2",
            "tessera_tls_handshakes_total{direction=\"outbound\",tls=\"mtls\",result=\"ok\"} 1",
            "tessera_refusals_total{reason=\"strict_plaintext\"} 1",
            "tessera_refusals_total{reason=\"not_http_on_http_port\"} 0",
            "tessera_upstream_failures_total 0",
            "tessera_config_updates_total{result=\"accepted\"} 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
