//! The proxy's Prometheus metrics (`/stats/prometheus`, OpenMetrics text), through
//! prometheus-client. Every series the hot path touches is created once and kept as a
//! handle (an atomic counter), so recording never takes a lock nor allocates.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tessera_contract::inbound::Refusal;

use super::limits::LimitEvent;
use super::{Direction, TlsUsed};

/// Status codes kept apart; larger ones count as 599.
const CODES: usize = 600;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    direction: &'static str,
    tls: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    policy: String,
    decision: &'static str,
}

pub struct Metrics {
    registry: Registry,
    connections: [Counter; 2],
    active: [Gauge; 2],
    requests: Family<RequestLabels, Counter>,
    /// Handles into `requests`, made at a code's first request.
    request_handles: [[OnceLock<Counter>; CODES]; 2],
    handshakes: Family<HandshakeLabels, Counter>,
    handshake_handles: [[[OnceLock<Counter>; 2]; 5]; 2],
    refusals: [Counter; Refusal::ALL.len()],
    upstream_failures: Counter,
    limits: [Counter; LimitEvent::ALL.len()],
    config_updates: [Counter; 2],
    authorizations: Family<AuthzLabels, Counter>,
    /// Handles into `authorizations` by policy (allow, deny): a decision finds its counter
    /// by name among the few policies a workload has, without allocating or hashing.
    authorization_handles: std::sync::RwLock<Vec<(String, [Counter; 2])>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let connections = Family::<DirectionLabels, Counter>::default();
        let active = Family::<DirectionLabels, Gauge>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        let refusals = Family::<ReasonLabels, Counter>::default();
        let upstream_failures = Counter::default();
        let limits = Family::<ReasonLabels, Counter>::default();
        let config_updates = Family::<ResultLabels, Counter>::default();
        let authorizations = Family::<AuthzLabels, Counter>::default();
        registry.register(
            "tessera_connections",
            "Downstream connections accepted",
            connections.clone(),
        );
        registry.register(
            "tessera_connections_active",
            "Downstream connections open",
            active.clone(),
        );
        registry.register(
            "tessera_requests",
            "HTTP requests answered, by status code",
            requests.clone(),
        );
        registry.register(
            "tessera_tls_handshakes",
            "TLS handshakes, by side, kind of TLS and result",
            handshakes.clone(),
        );
        registry.register(
            "tessera_refusals",
            "Connections refused, by reason",
            refusals.clone(),
        );
        registry.register(
            "tessera_upstream_failures",
            "Attempts toward an endpoint that failed",
            upstream_failures.clone(),
        );
        registry.register(
            "tessera_limits",
            "Connections and streams refused or ended by a limit, by reason",
            limits.clone(),
        );
        registry.register(
            "tessera_config_updates",
            "Configurations applied or rejected",
            config_updates.clone(),
        );
        registry.register(
            "tessera_authorization_decisions",
            "Requests and connections decided by AuthorizationPolicy, by the deciding policy (empty: none matched) and decision",
            authorizations.clone(),
        );
        let by_direction = |d: Direction| DirectionLabels {
            direction: d.label(),
        };
        Metrics {
            connections: Direction::ALL.map(|d| connections.get_or_create_owned(&by_direction(d))),
            active: Direction::ALL.map(|d| active.get_or_create_owned(&by_direction(d))),
            requests,
            request_handles: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            handshakes,
            handshake_handles: Default::default(),
            refusals: Refusal::ALL
                .map(|r| refusals.get_or_create_owned(&ReasonLabels { reason: r.label() })),
            upstream_failures,
            limits: LimitEvent::ALL
                .map(|e| limits.get_or_create_owned(&ReasonLabels { reason: e.label() })),
            config_updates: ["accepted", "rejected"]
                .map(|result| config_updates.get_or_create_owned(&ResultLabels { result })),
            authorizations,
            authorization_handles: Default::default(),
            registry,
        }
    }
}

impl Metrics {
    pub fn connection_opened(&self, d: Direction) {
        self.connections[d as usize].inc();
        self.active[d as usize].inc();
    }

    pub fn connection_closed(&self, d: Direction) {
        self.active[d as usize].dec();
    }

    /// Connections open on both sides.
    pub fn active(&self) -> u64 {
        self.active.iter().map(|g| g.get().max(0) as u64).sum()
    }

    pub fn request(&self, d: Direction, code: u16) {
        let code = code.min(CODES as u16 - 1);
        self.request_handles[d as usize][code as usize]
            .get_or_init(|| {
                self.requests.get_or_create_owned(&RequestLabels {
                    direction: d.label(),
                    code,
                })
            })
            .inc();
    }

    pub fn handshake(&self, d: Direction, tls: TlsUsed, ok: bool) {
        self.handshake_handles[d as usize][tls as usize][usize::from(!ok)]
            .get_or_init(|| {
                self.handshakes.get_or_create_owned(&HandshakeLabels {
                    direction: d.label(),
                    tls: tls.label(),
                    result: if ok { "ok" } else { "failed" },
                })
            })
            .inc();
    }

    pub fn refusal(&self, r: Refusal) {
        self.refusals[refusal_index(r)].inc();
    }

    pub fn refusals_of(&self, r: Refusal) -> u64 {
        self.refusals[refusal_index(r)].get()
    }

    /// One attempt toward an endpoint failed; a failed TLS handshake (with `tls`) is
    /// counted as such too.
    pub fn upstream_failed(&self, tls: TlsUsed, in_handshake: bool) {
        self.upstream_failures.inc();
        if in_handshake {
            self.handshake(Direction::Outbound, tls, false);
        }
    }

    pub fn limit(&self, e: LimitEvent) {
        self.limits[limit_index(e)].inc();
    }

    pub fn limits_of(&self, e: LimitEvent) -> u64 {
        self.limits[limit_index(e)].get()
    }

    /// A decision by AuthorizationPolicy: the policy whose rule decided ("" when no
    /// ALLOW rule matched). The label's values are the configuration's policy names.
    pub fn authorization(&self, policy: &str, allowed: bool) {
        let i = usize::from(!allowed);
        if let Some((_, c)) = self
            .authorization_handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(name, _)| name == policy)
        {
            c[i].inc();
            return;
        }
        // The policy's first decision: its counters are made and kept.
        let counters = ["allow", "deny"].map(|decision| {
            self.authorizations.get_or_create_owned(&AuthzLabels {
                policy: policy.to_string(),
                decision,
            })
        });
        counters[i].inc();
        self.authorization_handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((policy.to_string(), counters));
    }

    pub fn config(&self, accepted: bool) {
        self.config_updates[usize::from(!accepted)].inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn refusal_index(r: Refusal) -> usize {
    Refusal::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

fn limit_index(e: LimitEvent) -> usize {
    LimitEvent::ALL.iter().position(|x| *x == e).unwrap_or(0)
}
