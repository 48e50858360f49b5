//! Counters for `/stats/prometheus`: plain atomics indexed by small enums, so the hot path
//! never takes a lock or allocates.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tessera_contract::inbound::Refusal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
    fn index(self) -> usize {
        self as usize
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
    const ALL: [TlsUsed; 5] = [
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

const CODES: usize = 600;

pub struct Stats {
    connections_total: [AtomicU64; 2],
    connections_active: [AtomicU64; 2],
    requests: [[AtomicU64; CODES]; 2],
    handshakes_ok: [[AtomicU64; 5]; 2],
    handshakes_failed: [[AtomicU64; 5]; 2],
    refusals: [AtomicU64; Refusal::ALL.len()],
    upstream_failures: AtomicU64,
    config_reloads: AtomicU64,
    config_rejected: AtomicU64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            connections_total: Default::default(),
            connections_active: Default::default(),
            requests: [
                std::array::from_fn(|_| AtomicU64::new(0)),
                std::array::from_fn(|_| AtomicU64::new(0)),
            ],
            handshakes_ok: Default::default(),
            handshakes_failed: Default::default(),
            refusals: Default::default(),
            upstream_failures: AtomicU64::new(0),
            config_reloads: AtomicU64::new(0),
            config_rejected: AtomicU64::new(0),
        }
    }
}

/// Decrements the active-connection gauge when the connection ends.
pub struct ActiveGuard<'a>(&'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Stats {
    pub fn connection(&self, d: Direction) -> ActiveGuard<'_> {
        self.connections_total[d.index()].fetch_add(1, Relaxed);
        self.connections_active[d.index()].fetch_add(1, Relaxed);
        ActiveGuard(&self.connections_active[d.index()])
    }

    pub fn active(&self) -> u64 {
        self.connections_active
            .iter()
            .map(|a| a.load(Relaxed))
            .sum()
    }

    pub fn request(&self, d: Direction, code: u16) {
        let code = (code as usize).min(CODES - 1);
        self.requests[d.index()][code].fetch_add(1, Relaxed);
    }

    pub fn handshake(&self, d: Direction, tls: TlsUsed, ok: bool) {
        let table = if ok {
            &self.handshakes_ok
        } else {
            &self.handshakes_failed
        };
        table[d.index()][tls as usize].fetch_add(1, Relaxed);
    }

    pub fn refusal(&self, r: Refusal) {
        let i = Refusal::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.refusals[i].fetch_add(1, Relaxed);
    }

    pub fn upstream_failure(&self) {
        self.upstream_failures.fetch_add(1, Relaxed);
    }

    pub fn config(&self, accepted: bool) {
        if accepted {
            self.config_reloads.fetch_add(1, Relaxed);
        } else {
            self.config_rejected.fetch_add(1, Relaxed);
        }
    }

    pub fn refusals_of(&self, r: Refusal) -> u64 {
        let i = Refusal::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.refusals[i].load(Relaxed)
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let dirs = [Direction::Inbound, Direction::Outbound];
        out.push_str("# TYPE tessera_connections_total counter\n");
        for d in dirs {
            let _ = writeln!(
                out,
                "tessera_connections_total{{direction=\"{}\"}} {}",
                d.label(),
                self.connections_total[d.index()].load(Relaxed)
            );
        }
        out.push_str("# TYPE tessera_connections_active gauge\n");
        for d in dirs {
            let _ = writeln!(
                out,
                "tessera_connections_active{{direction=\"{}\"}} {}",
                d.label(),
                self.connections_active[d.index()].load(Relaxed)
            );
        }
        out.push_str("# TYPE tessera_requests_total counter\n");
        for d in dirs {
            for (code, n) in self.requests[d.index()].iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tessera_requests_total{{direction=\"{}\",code=\"{code}\"}} {n}",
                        d.label()
                    );
                }
            }
        }
        out.push_str("# TYPE tessera_tls_handshakes_total counter\n");
        for d in dirs {
            for tls in TlsUsed::ALL {
                for (result, table) in [
                    ("ok", &self.handshakes_ok),
                    ("failed", &self.handshakes_failed),
                ] {
                    let n = table[d.index()][tls as usize].load(Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "tessera_tls_handshakes_total{{direction=\"{}\",tls=\"{}\",result=\"{result}\"}} {n}",
                            d.label(),
                            tls.label()
                        );
                    }
                }
            }
        }
        out.push_str("# TYPE tessera_refusals_total counter\n");
        for (i, r) in Refusal::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "tessera_refusals_total{{reason=\"{}\"}} {}",
                r.label(),
                self.refusals[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# TYPE tessera_upstream_failures_total counter\ntessera_upstream_failures_total {}",
            self.upstream_failures.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE tessera_config_updates_total counter\ntessera_config_updates_total{{result=\"accepted\"}} {}\ntessera_config_updates_total{{result=\"rejected\"}} {}",
            self.config_reloads.load(Relaxed),
            self.config_rejected.load(Relaxed)
        );
        out
    }
}
