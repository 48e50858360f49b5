//! The control plane's state, shared by its servers: the objects at the latest revision,
//! the world the compiler reads, the CA's issuer, the proxies' push status; and the one
//! way to change objects: a batch admitted, planned, persisted in one transaction, then
//! published.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tessera_ca::issuance::Issuer;
use tessera_model::Resource;
use tokio::sync::watch;

use crate::objects::{Objects, Op, Outcome};
use crate::policy::MeshOptions;
use crate::push::{unix_now, ProxyStatusRow, ProxyTable};
use crate::store::Store;
use crate::world::World;

/// Mutates an object before it is planned (create and apply only).
pub trait Admission: Send + Sync {
    /// `objects` is the state the batch applies to. An error refuses the whole batch.
    fn admit(&self, objects: &Objects, resource: Resource) -> Result<Resource, String>;
}

/// The control plane's state, shared by its servers.
pub struct ControlState {
    pub(crate) state_dir: PathBuf,
    pub(crate) options: MeshOptions,
    pub(crate) store: Box<dyn Store>,
    pub(crate) objects: Mutex<Arc<Objects>>,
    /// The latest [`HISTORY`] revisions, oldest first: where a watch from a recent
    /// `resourceVersion` starts.
    pub(crate) history: Mutex<std::collections::VecDeque<Arc<Objects>>>,
    pub(crate) writes: tokio::sync::Mutex<()>,
    pub(crate) changes: watch::Sender<u64>,
    pub(crate) world: watch::Receiver<Arc<World>>,
    pub(crate) issuer: Arc<Issuer>,
    pub(crate) proxies: ProxyTable,
    pub(crate) admission: Option<Arc<dyn Admission>>,
}

/// How many revisions a watch can start from (older ones get 410 Gone and relist).
pub const HISTORY: usize = 256;

impl ControlState {
    pub fn objects(&self) -> Arc<Objects> {
        self.objects.lock().unwrap().clone()
    }

    /// The objects as they were at `revision`, if it is recent enough.
    pub fn objects_at(&self, revision: u64) -> Option<Arc<Objects>> {
        let current = self.objects();
        if current.revision() == revision {
            return Some(current);
        }
        let history = self.history.lock().unwrap();
        history.iter().find(|o| o.revision() == revision).cloned()
    }

    /// The world the compiler reads (recomputed [`DEBOUNCE`] after a change).
    pub fn world(&self) -> Arc<World> {
        self.world.borrow().clone()
    }

    /// The world at the latest revision, even inside the debounce window (for answers
    /// right after an apply: `describe`, `/config`).
    pub fn current_world(&self) -> Arc<World> {
        let world = self.world();
        let objects = self.objects();
        if world.revision >= objects.revision() {
            world
        } else {
            Arc::new(World::build(&objects, &self.options))
        }
    }

    /// The latest committed revision; changes with every write.
    pub fn revisions(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn world_watch(&self) -> watch::Receiver<Arc<World>> {
        self.world.clone()
    }

    pub fn options(&self) -> &MeshOptions {
        &self.options
    }

    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }

    /// Every proxy that has connected, except disconnected ones whose pod is gone (a
    /// deleted pod's proxy is not news; one that dropped while its pod lives is).
    pub fn proxies(&self) -> Vec<ProxyStatusRow> {
        let now = unix_now();
        let objects = self.objects();
        let pod_exists = |node_id: &str| {
            node_id.rsplit_once('.').is_some_and(|(pod, ns)| {
                objects
                    .get(&crate::objects::ObjectKey::new(
                        tessera_model::Kind::Pod,
                        ns,
                        pod,
                    ))
                    .is_some()
            })
        };
        let mut table = self.proxies.lock().unwrap();
        table.retain(|node_id, s| s.connected || pod_exists(node_id));
        table
            .values()
            .map(|s| ProxyStatusRow {
                sync: s.state(now),
                status: s.clone(),
            })
            .collect()
    }

    /// Plans a batch, persists it in one transaction, then publishes it. All or nothing.
    pub async fn submit(&self, ops: Vec<Op>) -> Result<(Vec<Outcome>, u64), Vec<String>> {
        self.submit_with(|_| ops).await
    }

    /// [`ControlState::submit`] with the operations decided from the state they will apply to
    /// (under the write lock, so nothing changes in between).
    pub async fn submit_with(
        &self,
        ops: impl FnOnce(&Objects) -> Vec<Op>,
    ) -> Result<(Vec<Outcome>, u64), Vec<String>> {
        let _serialized = self.writes.lock().await;
        let current = self.objects();
        let ops = self.admit(&current, ops(&current))?;
        let plan = current.plan(ops, time::OffsetDateTime::now_utc())?;
        let revision = plan.next.revision();
        if !plan.writes.is_empty() {
            // A synchronous commit (fsync) must not stall the push sessions' threads.
            let commit = || self.store.commit(&plan.writes, revision);
            let committed = match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(commit)
                }
                _ => commit(),
            };
            committed.map_err(|e| vec![format!("Error from server (InternalError): {e}")])?;
            let next = Arc::new(plan.next);
            {
                let mut history = self.history.lock().unwrap();
                history.push_back(next.clone());
                while history.len() > HISTORY {
                    history.pop_front();
                }
            }
            *self.objects.lock().unwrap() = next;
            self.changes.send_replace(revision);
        }
        Ok((plan.outcomes, revision))
    }

    /// Creates and applies as the admission hook (if any) changes them; an error refuses
    /// the whole batch.
    pub(crate) fn admit(&self, objects: &Objects, ops: Vec<Op>) -> Result<Vec<Op>, Vec<String>> {
        let Some(admission) = &self.admission else {
            return Ok(ops);
        };
        let mut errors = Vec::new();
        let mut admitted = Vec::with_capacity(ops.len());
        for op in ops {
            type Rebuild = fn(String, Resource) -> Op;
            let (origin, resource, rebuild): (String, Resource, Rebuild) = match op {
                Op::Apply { origin, resource } => (origin, resource, |origin, resource| {
                    Op::Apply { origin, resource }
                }),
                Op::Create { origin, resource } => (origin, resource, |origin, resource| {
                    Op::Create { origin, resource }
                }),
                Op::Update { origin, resource } => (origin, resource, |origin, resource| {
                    Op::Update { origin, resource }
                }),
                op => {
                    admitted.push(op);
                    continue;
                }
            };
            match admission.admit(objects, resource) {
                Ok(resource) => admitted.push(rebuild(origin, resource)),
                Err(e) => errors.push(format!("{origin}: Error from server (admission): {e}")),
            }
        }
        if errors.is_empty() {
            Ok(admitted)
        } else {
            Err(errors)
        }
    }
}
