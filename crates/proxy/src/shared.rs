//! What every connection handler shares: the current snapshot (swapped whole), the
//! workload's credentials, the connection pools, telemetry, and the drain and
//! configuration-change signals.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tessera_ca::CredentialStore;
use tokio_rustls::TlsAcceptor;

use crate::config::{EndpointRoute, Origination, Snapshot, Upstream};
use crate::connect::{Phase, UpstreamError};
use crate::io::IdleLimit;
use crate::limits::Limits;
use crate::pool::HttpPool;
use crate::push;
use crate::telemetry::Telemetry;

/// What every connection handler shares.
pub struct Shared {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub store: CredentialStore,
    /// Metrics, edges and the access log.
    pub telemetry: Arc<Telemetry>,
    pub pools: Arc<HttpPool>,
    pub(crate) inbound_tls: TlsAcceptor,
    /// Set once when a drain starts; open HTTP connections are asked to finish.
    pub(crate) drain: tokio::sync::watch::Sender<bool>,
    pub(crate) draining: AtomicBool,
    /// Bumped on every applied configuration: inbound connections re-check the rule they
    /// were accepted under (a policy change must not leave connections it forbids open).
    pub(crate) config_epoch: tokio::sync::watch::Sender<u64>,
    pub(crate) last_rejected: Mutex<Option<String>>,
    /// Pushed mode only: the link to the control plane.
    pub(crate) push: Option<push::SharedPushStatus>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn identity(&self) -> String {
        self.snapshot.load().config.node.identity.clone()
    }

    pub fn node_id(&self) -> String {
        self.snapshot.load().config.node.id.clone()
    }

    pub fn access_log(&self) -> bool {
        self.telemetry.access_log()
    }

    pub fn detection_wait(&self) -> Duration {
        Duration::from_millis(self.snapshot.load().config.runtime.protocol_detection_ms)
    }

    /// The limits of the configuration in force.
    pub fn limits(&self) -> Limits {
        self.snapshot.load().limits
    }

    /// The TCP idle limit in force, for opaque flows.
    pub(crate) fn tcp_idle(&self) -> IdleLimit<'_> {
        IdleLimit {
            idle: self.limits().tcp_idle,
            telemetry: &self.telemetry,
        }
    }

    pub fn inbound_tls(&self) -> TlsAcceptor {
        self.inbound_tls.clone()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn last_rejected(&self) -> Option<String> {
        self.last_rejected.lock().unwrap().clone()
    }

    /// Pushed mode: the state of the link to the control plane.
    pub fn push_status(&self) -> Option<push::PushStatus> {
        self.push.as_ref().map(|p| p.lock().unwrap().clone())
    }

    /// False while a pushed-mode proxy still runs its bootstrap (Istio's readiness gate).
    pub fn is_synced(&self) -> bool {
        self.push
            .as_ref()
            .is_none_or(|p| p.lock().unwrap().applied > 0)
    }

    /// The app behind the inbound side, plaintext; one pool per address.
    pub fn app_route(&self, address: SocketAddr) -> Arc<EndpointRoute> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("app", address).hash(&mut h);
        Arc::new(EndpointRoute {
            address,
            workload: None,
            origination: Origination::Plaintext,
            pool_key: h.finish(),
            reason: Arc::from(""),
            local_app: true,
        })
    }

    /// `upstream` as the newest configuration has it, once it has endpoints: a known
    /// service without endpoints yet is held (at most `runtime.endpointHoldMs`) for a push
    /// that brings some, then answered as it stands.
    pub async fn with_endpoints(&self, upstream: Arc<Upstream>) -> Arc<Upstream> {
        // A keep-alive downstream connection was routed with the snapshot of its first
        // request; each request takes the endpoints the control plane lists now.
        let upstream = match self.snapshot.load().upstream_named(&upstream.name) {
            Some(now) if !Arc::ptr_eq(now, &upstream) => now.clone(),
            _ => upstream,
        };
        if !upstream.endpoints.is_empty() {
            return upstream;
        }
        let hold = Duration::from_millis(self.snapshot.load().config.runtime.endpoint_hold_ms);
        let mut updates = self.config_updates();
        let deadline = tokio::time::Instant::now() + hold;
        let mut current = upstream;
        loop {
            if let Some(now) = self.snapshot().upstream_named(&current.name) {
                current = now.clone();
            }
            if !current.endpoints.is_empty() {
                return current;
            }
            match tokio::time::timeout_at(deadline, updates.changed()).await {
                Ok(Ok(())) => {}
                _ => return current,
            }
        }
    }

    /// Runs `connecting` (a connect to `address`, an endpoint of `upstream`) unless a
    /// configuration that no longer lists that endpoint is applied first: a connect to a
    /// pod that went away may hang for the connect timeout (its address no longer answers
    /// at all), while the control plane already said to use another endpoint. The
    /// abandoned attempt counts as a connect failure, so the next endpoint is tried.
    pub async fn connect_unless_removed<T>(
        &self,
        upstream: &str,
        address: SocketAddr,
        connecting: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        // Polled only if the connect does not finish at once (a pooled connection is
        // ready without it). Only upstreams the snapshot knows by name can be followed.
        let removed = async {
            let mut updates = self.config_updates();
            if self.snapshot().upstream_named(upstream).is_none() {
                return std::future::pending::<()>().await;
            }
            loop {
                let listed = self
                    .snapshot()
                    .upstream_named(upstream)
                    .is_some_and(|u| u.endpoints.iter().any(|e| e.address == address));
                if !listed || updates.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            biased;
            r = connecting => r,
            () = removed => Err(UpstreamError {
                phase: Phase::Connect,
                reason: format!("{address} was removed from {upstream}'s endpoints while connecting"),
            }),
        }
    }

    /// A receiver that sees every configuration applied from now on.
    pub fn config_updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.config_epoch.subscribe()
    }
}
