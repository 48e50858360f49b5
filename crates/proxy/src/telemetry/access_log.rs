//! The access log: one line per TCP connection or HTTP request, on the `tessera::access`
//! target, when the snapshot turns it on.

use std::net::SocketAddr;
use std::time::Instant;

use crate::telemetry::{Direction, TlsUsed};

/// One line for a TCP connection that ended (when `enabled`).
#[allow(clippy::too_many_arguments)]
pub fn tcp_log(
    enabled: bool,
    direction: Direction,
    src: SocketAddr,
    src_identity: Option<&str>,
    dst: &str,
    tls: TlsUsed,
    result: &str,
    sent: u64,
    received: u64,
    started: Instant,
) {
    if enabled {
        tracing::info!(
            target: "tessera::access",
            direction = direction.label(),
            src = %src,
            src_identity = src_identity.unwrap_or("-"),
            dst,
            tls = tls.label(),
            protocol = "tcp",
            result,
            bytes_sent = sent,
            bytes_received = received,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}
