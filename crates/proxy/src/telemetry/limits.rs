//! The limits a client can hit ([`LimitEvent`], the `reason` of `tessera_limits_total`)
//! and their log lines: a flood of them (10,000 idle connections timing out) must not
//! become 10,000 lines. The first hit of each kind is logged with what it means; later
//! ones are only counted, and summed up in one line at most once a minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A limit that was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitEvent {
    /// A listener already had its maximum of open connections; the new one was reset.
    ConnectionLimit,
    /// A request head did not arrive in time; the connection was closed.
    HeaderTimeout,
    /// A request head was larger than allowed; answered 431 and closed.
    HeadersTooLarge,
    /// A downstream HTTP connection had no request in flight for too long; closed.
    IdleTimeout,
    /// A request or response stopped moving; the stream was ended.
    StreamIdleTimeout,
    /// An opaque TCP connection carried no bytes for too long; closed.
    TcpIdleTimeout,
    /// A downstream TLS handshake did not finish in time.
    TlsHandshakeTimeout,
    /// An HTTP/2 client cancelled streams faster than allowed; the connection was closed.
    H2ResetFlood,
}

impl LimitEvent {
    pub const ALL: [LimitEvent; 8] = [
        LimitEvent::ConnectionLimit,
        LimitEvent::HeaderTimeout,
        LimitEvent::HeadersTooLarge,
        LimitEvent::IdleTimeout,
        LimitEvent::StreamIdleTimeout,
        LimitEvent::TcpIdleTimeout,
        LimitEvent::TlsHandshakeTimeout,
        LimitEvent::H2ResetFlood,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            LimitEvent::ConnectionLimit => "connection_limit",
            LimitEvent::HeaderTimeout => "header_timeout",
            LimitEvent::HeadersTooLarge => "headers_too_large",
            LimitEvent::IdleTimeout => "idle_timeout",
            LimitEvent::StreamIdleTimeout => "stream_idle_timeout",
            LimitEvent::TcpIdleTimeout => "tcp_idle_timeout",
            LimitEvent::TlsHandshakeTimeout => "tls_handshake_timeout",
            LimitEvent::H2ResetFlood => "h2_reset_flood",
        }
    }

    /// What happened, for the log, naming the setting under `runtime.limits`.
    pub fn explain(self) -> &'static str {
        match self {
            LimitEvent::ConnectionLimit => {
                "a listener is at maxConnectionsPerListener; new connections are reset"
            }
            LimitEvent::HeaderTimeout => {
                "a client did not send a request head within headerReadTimeoutMs; its connection was closed"
            }
            LimitEvent::HeadersTooLarge => {
                "a request head exceeded maxRequestHeadersBytes; answered 431 and closed"
            }
            LimitEvent::IdleTimeout => {
                "a connection had no request in flight for idleTimeoutMs; it was closed"
            }
            LimitEvent::StreamIdleTimeout => {
                "a request or response moved no bytes for streamIdleTimeoutMs; the stream was ended"
            }
            LimitEvent::TcpIdleTimeout => {
                "a TCP connection moved no bytes for tcpIdleTimeoutMs; it was closed"
            }
            LimitEvent::TlsHandshakeTimeout => {
                "a client did not finish its TLS handshake within tlsHandshakeTimeoutMs"
            }
            LimitEvent::H2ResetFlood => {
                "an HTTP/2 client cancelled more than h2MaxResetsPerSecond streams in a second; its connection was closed"
            }
        }
    }

    /// Whether the event is routine housekeeping rather than a client misbehaving: it is
    /// logged at debug level instead of warn.
    pub fn routine(self) -> bool {
        matches!(self, LimitEvent::IdleTimeout | LimitEvent::TcpIdleTimeout)
    }
}

const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Per kind of limit: hits not yet logged, and when the last line was written.
#[derive(Default)]
pub struct LimitLog {
    kinds: [Kind; LimitEvent::ALL.len()],
}

#[derive(Default)]
struct Kind {
    unlogged: AtomicU64,
    last_line: Mutex<Option<Instant>>,
}

impl LimitLog {
    /// Records a hit; returns the number of hits the line written now covers (0: none
    /// written).
    pub fn hit(&self, event: LimitEvent) -> u64 {
        let kind = &self.kinds[index(event)];
        kind.unlogged.fetch_add(1, Ordering::Relaxed);
        let mut last = match kind.last_line.try_lock() {
            Ok(last) => last,
            // Another thread is writing this kind's line; this hit is in its count or the next.
            Err(_) => return 0,
        };
        let first = last.is_none();
        if last.is_some_and(|t| t.elapsed() < SUMMARY_EVERY) {
            return 0;
        }
        *last = Some(Instant::now());
        let covered = kind.unlogged.swap(0, Ordering::Relaxed);
        let level_warn = !event.routine();
        match (first, level_warn) {
            (true, true) => tracing::warn!(reason = event.label(), "limit reached: {}; further hits are counted in tessera_limits_total and summed up here at most once a minute", event.explain()),
            (true, false) => tracing::debug!(reason = event.label(), "{}", event.explain()),
            (false, true) => tracing::warn!(reason = event.label(), hits = covered, "limit reached {covered} times since the last line: {}", event.explain()),
            (false, false) => tracing::debug!(reason = event.label(), hits = covered, "{}", event.explain()),
        }
        covered
    }
}

fn index(event: LimitEvent) -> usize {
    LimitEvent::ALL
        .iter()
        .position(|e| *e == event)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_hit_is_logged_and_the_rest_wait_for_the_summary() {
        let log = LimitLog::default();
        assert_eq!(log.hit(LimitEvent::HeaderTimeout), 1);
        for _ in 0..1000 {
            assert_eq!(log.hit(LimitEvent::HeaderTimeout), 0);
        }
        // Another kind has its own first line.
        assert_eq!(log.hit(LimitEvent::ConnectionLimit), 1);
        // A minute later, one line covers everything since.
        *log.kinds[index(LimitEvent::HeaderTimeout)]
            .last_line
            .lock()
            .unwrap() = Instant::now().checked_sub(SUMMARY_EVERY);
        assert_eq!(log.hit(LimitEvent::HeaderTimeout), 1001);
    }
}
