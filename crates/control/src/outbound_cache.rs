//! The outbound side of the snapshots of one world, compiled once and shared: a service
//! compiles the same for every client that uses the same DestinationRule for it and
//! imports the same ports, and a list of services is the same for every client of one
//! scope (namespace, Sidecar, the selector DestinationRules that pick it). The compiler
//! fills it ([`crate::compile`]); config push sends its pieces.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use tessera_contract::config::Service;

/// One service as a set of clients sees it, with its JSON as pushed.
#[derive(Debug)]
pub struct CompiledService {
    pub service: Service,
    pub json: Box<[u8]>,
    /// Of `json`: two compiled services with one digest carry the same JSON.
    pub digest: u64,
}

impl CompiledService {
    pub fn new(service: Service) -> CompiledService {
        let json = serde_json::to_vec(&service)
            .expect("a service serialises")
            .into_boxed_slice();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        json.hash(&mut hasher);
        CompiledService {
            service,
            digest: hasher.finish(),
            json,
        }
    }
}

/// The services one proxy is given, in host order.
#[derive(Debug, Default)]
pub struct OutboundScope {
    pub services: Vec<Arc<CompiledService>>,
}

/// The ports of one service a Sidecar's egress listeners import.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Imported {
    /// Not imported: the proxy is not given the service.
    No,
    AllPorts,
    /// Only these ports, ascending.
    Ports(Vec<u16>),
}

/// What one client's services depend on besides the world.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ScopeKey {
    pub namespace: String,
    pub sidecar: Option<usize>,
    pub selector_rules: Vec<usize>,
}

/// What one compiled service depends on besides the world.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ServiceKey {
    pub service: usize,
    pub rule: Option<usize>,
    pub imported: Imported,
}

/// The outbound side of every snapshot of one world, compiled on first use.
#[derive(Default)]
pub struct OutboundCache {
    scopes: Mutex<HashMap<ScopeKey, Arc<OnceLock<Arc<OutboundScope>>>>>,
    services: Mutex<HashMap<ServiceKey, Arc<CompiledService>>>,
}

impl OutboundCache {
    /// The scope `key` names, compiled by `compile` on first use; clients of one scope
    /// that ask at once wait for the first one's compilation.
    pub(crate) fn scope(
        &self,
        key: ScopeKey,
        compile: impl FnOnce() -> OutboundScope,
    ) -> Arc<OutboundScope> {
        let cell = self.scopes.lock().unwrap().entry(key).or_default().clone();
        cell.get_or_init(|| Arc::new(compile())).clone()
    }

    /// The service `key` names, compiled by `compile` on first use.
    pub(crate) fn service(
        &self,
        key: &ServiceKey,
        compile: impl FnOnce() -> CompiledService,
    ) -> Arc<CompiledService> {
        if let Some(c) = self.services.lock().unwrap().get(key) {
            return c.clone();
        }
        let c = Arc::new(compile());
        self.services
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_insert(c)
            .clone()
    }
}

impl Clone for OutboundCache {
    /// A copy of a world compiles afresh.
    fn clone(&self) -> Self {
        OutboundCache::default()
    }
}

impl std::fmt::Debug for OutboundCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scopes = self.scopes.lock().unwrap().len();
        let services = self.services.lock().unwrap().len();
        write!(
            f,
            "OutboundCache {{ {scopes} scopes, {services} services }}"
        )
    }
}
