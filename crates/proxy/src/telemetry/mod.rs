//! What a proxy reports: Prometheus metrics ([`metrics`]), the connections it has seen per
//! peer ([`edges`], admin `/edges`) and the access log ([`access_log`]). The traffic path
//! records through one [`ConnectionResult`] per downstream connection and one
//! [`RequestResult`] per HTTP request, which feed all three when they end.

pub mod access_log;
pub mod edges;
pub mod limits;
pub mod metrics;
mod result;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

pub use self::metrics::Metrics;
pub use self::result::{ConnectionResult, RequestResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

    pub fn label(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// TLS on a connection, as logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsUsed {
    /// Mesh mTLS (ISTIO_MUTUAL).
    Mesh,
    /// DestinationRule SIMPLE / MUTUAL.
    Simple,
    Mutual,
    /// The application's own TLS, passed through.
    AppTls,
    Plaintext,
}

impl TlsUsed {
    pub const ALL: [TlsUsed; 5] = [
        TlsUsed::Mesh,
        TlsUsed::Simple,
        TlsUsed::Mutual,
        TlsUsed::AppTls,
        TlsUsed::Plaintext,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TlsUsed::Mesh => "mtls",
            TlsUsed::Simple => "simple",
            TlsUsed::Mutual => "mutual",
            TlsUsed::AppTls => "app_tls_passthrough",
            TlsUsed::Plaintext => "plaintext",
        }
    }
}

/// Everything a proxy reports into, shared by its connections.
#[derive(Default)]
pub struct Telemetry {
    pub metrics: Metrics,
    pub edges: edges::Edges,
    /// Limit hits, logged once per kind (then summed up).
    pub limit_log: limits::LimitLog,
    /// The snapshot's `runtime.accessLog`, kept current on every configuration applied.
    access_log: AtomicBool,
}

impl Telemetry {
    /// A limit was hit: counted, and logged once per kind.
    pub fn limit_hit(&self, event: limits::LimitEvent) {
        self.metrics.limit(event);
        self.limit_log.hit(event);
    }

    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    /// A connection this proxy opened toward a mesh endpoint: an outbound edge that went
    /// through, or failed with `failure`. The server's identity is not read from its
    /// certificate here (a cost per connection): the verifier already held it to the
    /// endpoint's SANs, and the server's own sidecar reports it for the same edge.
    pub fn upstream_connection(
        &self,
        endpoint: SocketAddr,
        tls: TlsUsed,
        failure: Option<&'static str>,
        reason: impl FnOnce() -> String,
    ) {
        let edge = edges::Connection::outbound(endpoint, tls);
        match failure {
            None => self.edges.record(edge, reason),
            Some(f) => self.edges.record(edge.failed(f), reason),
        }
    }
}
