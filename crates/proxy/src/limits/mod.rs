//! What one client may make the proxy spend, and what happens at each limit: a new
//! connection past a listener's cap is reset; a request head that does not arrive in time
//! closes its connection; an idle connection is closed; a stream that stops moving ends;
//! an HTTP/2 client that cancels streams faster than allowed loses its connection. Every
//! hit is counted (`tessera_limits_total{reason}`) and logged once per kind
//! ([`crate::telemetry::limits`]).
//!
//! - [`watch`]: one downstream HTTP connection's clocks (head, idle) and reset budget;
//! - [`body`]: a body that ends when it stops moving (the stream idle timeout).

pub mod body;
pub mod watch;

use std::time::Duration;

use tessera_contract::config::ProxyLimits;

pub use crate::telemetry::limits::LimitEvent;

/// The configuration's limits, in the units the serving code uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections_per_listener: usize,
    pub header_read: Duration,
    pub idle: Duration,
    pub upstream_idle: Duration,
    pub stream_idle: Duration,
    pub tcp_idle: Duration,
    pub tls_handshake: Duration,
    pub max_request_headers: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_resets_per_second: u32,
    pub h2_stream_window: u32,
    pub h2_connection_window: u32,
}

impl From<&ProxyLimits> for Limits {
    fn from(l: &ProxyLimits) -> Limits {
        let ms = Duration::from_millis;
        Limits {
            max_connections_per_listener: l.max_connections_per_listener,
            header_read: ms(l.header_read_timeout_ms),
            idle: ms(l.idle_timeout_ms),
            upstream_idle: ms(l.upstream_idle_timeout_ms),
            stream_idle: ms(l.stream_idle_timeout_ms),
            tcp_idle: ms(l.tcp_idle_timeout_ms),
            tls_handshake: ms(l.tls_handshake_timeout_ms),
            max_request_headers: l.max_request_headers_bytes,
            h2_max_concurrent_streams: l.h2_max_concurrent_streams,
            h2_max_resets_per_second: l.h2_max_resets_per_second,
            h2_stream_window: l.h2_stream_window_bytes,
            h2_connection_window: l.h2_connection_window_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from(&ProxyLimits::default())
    }
}
