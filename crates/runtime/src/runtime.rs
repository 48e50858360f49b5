//! The runtime's reconcile loop: controllers make pods, pods get sandboxes, the cluster
//! network follows the services, and what runs is reported back as status. It wakes on
//! every store change, when a container starts or exits, and once a second (probes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tessera_control::registry::Registry;
use tessera_control::{ControlState, ObjectKey, Objects, Op};
use tessera_model::kube::{
    ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodStatus,
};
use tessera_model::{Kind, Resource};
use tokio::sync::{watch, Notify};

use crate::cluster;
use crate::network::ClusterNetwork;
use crate::publish::Publisher;
use crate::sandbox::{Host, PrepareError, Sandbox, Waiting};
use crate::workloads;

type PodKey = (String, String);

pub struct Runtime {
    host: Arc<Host>,
    control: Arc<ControlState>,
    net: Arc<ClusterNetwork>,
    publisher: Publisher,
    pods: BTreeMap<PodKey, Sandbox>,
    waiting: BTreeMap<PodKey, Waiting>,
    used_ips: BTreeSet<Ipv4Addr>,
    /// Index of the pod address handed out last ([`cluster::next_pod_ip`]).
    last_ip: u32,
    next_seq: u32,
    wake: Arc<Notify>,
    names: u64,
    /// The store revision the network and the pods' files were last brought to.
    synced: Option<u64>,
}

impl Runtime {
    pub fn new(
        host: Host,
        control: Arc<ControlState>,
        net: ClusterNetwork,
        publisher: Publisher,
    ) -> Runtime {
        Runtime {
            host: Arc::new(host),
            control,
            net: Arc::new(net),
            publisher,
            pods: BTreeMap::new(),
            waiting: BTreeMap::new(),
            used_ips: BTreeSet::new(),
            last_ip: 0,
            next_seq: 0,
            wake: Arc::new(Notify::new()),
            names: 0,
            synced: None,
        }
    }

    /// Reconciles until `stop`, then stops every pod. When the control plane restarts, a
    /// new one arrives on `controls`; `pause` is held while a reconcile runs, so that the
    /// restart (which takes it) never overlaps a write to the store it is reopening.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut controls: watch::Receiver<Arc<ControlState>>,
        pause: Arc<tokio::sync::Mutex<()>>,
    ) {
        let mut revisions = self.control.revisions();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let wake = self.wake.clone();
        loop {
            {
                let _running = pause.lock().await;
                let current = controls.borrow_and_update().clone();
                if !Arc::ptr_eq(&current, &self.control) {
                    tracing::info!("the runtime follows the restarted control plane");
                    self.control = current;
                    revisions = self.control.revisions();
                    self.synced = None;
                }
                self.reconcile().await;
            }
            tokio::select! {
                r = revisions.changed() => {
                    if r.is_err() { break; }
                    // Let a burst of writes land before acting on it.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                r = controls.changed() => if r.is_err() { break },
                _ = tick.tick() => {}
                _ = wake.notified() => {}
                _ = stopped(&mut stop) => break,
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(mut self) {
        let mut stopping = tokio::task::JoinSet::new();
        for (_, s) in std::mem::take(&mut self.pods) {
            stopping.spawn(s.stop());
        }
        while stopping.join_next().await.is_some() {}
        self.publisher.stop();
    }

    async fn reconcile(&mut self) {
        let objects = self.control.objects();
        let ops = workloads::reconcile(&objects, &mut || self.suffix());
        if !ops.is_empty() {
            if let Err(errors) = self.control.submit(ops).await {
                tracing::error!(errors = %errors.join("; "), "controllers' pods refused");
            }
        }
        let objects = self.control.objects();
        self.sync_pods(&objects).await;
        let objects = self.control.objects();
        if self.synced != Some(objects.revision()) {
            self.sync_network_and_files(&objects);
            self.synced = Some(objects.revision());
        }
        let control = self.control.clone();
        tokio::task::block_in_place(|| {
            for s in self.pods.values_mut() {
                if let Err(e) = s.renew_token(&control) {
                    tracing::warn!(pod = %s.info.pod, error = %e, "proxy token not renewed");
                }
                s.probe();
            }
        });
        self.report(&objects).await;
    }

    /// What follows the store: service NAT, every pod's hosts file and volumes, the
    /// published ports.
    fn sync_network_and_files(&mut self, objects: &Objects) {
        let reg = Registry::from_objects(objects);
        let rules = cluster::service_rules(&reg);
        let net = self.net.clone();
        tokio::task::block_in_place(|| {
            match net.set_service_rules(&rules) {
                Ok(true) => tracing::debug!("service rules updated"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "service rules not applied"),
            }
            for s in self.pods.values() {
                let hosts = cluster::hosts_file(&reg, &s.info.namespace, &s.info.pod, s.info.ip);
                if let Err(e) = s.sync_files(objects, &hosts) {
                    tracing::warn!(pod = %s.info.pod, error = %e, "pod files not refreshed");
                }
            }
        });
        self.publisher
            .sync(&cluster::published(objects, self.host.ingress_ip));
    }

    fn suffix(&mut self) -> String {
        use sha2::Digest;
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.names += 1;
        let seed = format!(
            "{:?}{}{}",
            std::time::SystemTime::now(),
            self.names,
            std::process::id()
        );
        sha2::Sha256::digest(seed.as_bytes())
            .iter()
            .take(5)
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect()
    }

    /// Starts sandboxes for new pods, stops those of deleted (or replaced) pods.
    async fn sync_pods(&mut self, objects: &Objects) {
        let desired: BTreeMap<PodKey, &Pod> = objects
            .iter()
            .filter_map(|s| match &s.resource {
                Resource::Pod(p) => Some((
                    (
                        p.metadata.namespace.clone().unwrap_or_default(),
                        p.metadata.name.clone(),
                    ),
                    p,
                )),
                _ => None,
            })
            .collect();
        let gone: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|(k, s)| {
                desired
                    .get(*k)
                    .is_none_or(|p| p.metadata.uid.as_deref() != Some(s.uid()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(s) = self.pods.remove(&k) {
                self.used_ips.remove(&s.info.ip);
                tracing::info!(namespace = %k.0, pod = %k.1, "stopping pod");
                s.stop().await;
            }
        }
        self.waiting.retain(|k, _| desired.contains_key(k));
        for (key, pod) in desired {
            if self.pods.contains_key(&key) {
                continue;
            }
            let Some((index, ip)) = cluster::next_pod_ip(&self.used_ips, self.last_ip) else {
                tracing::error!("the pod network is full");
                break;
            };
            self.next_seq += 1;
            let seq = self.next_seq;
            let host = self.host.clone();
            let net = self.net.clone();
            let prepared = tokio::task::block_in_place(|| {
                Sandbox::prepare(&host, objects, pod, seq, ip, &net)
            });
            match prepared {
                Ok((info, dir)) => {
                    match Sandbox::start(
                        &self.host,
                        &self.control,
                        pod.clone(),
                        info,
                        dir,
                        self.wake.clone(),
                    ) {
                        Ok(s) => {
                            tracing::info!(namespace = %key.0, pod = %key.1, ip = %ip, netns = %s.info.netns, "pod started");
                            self.used_ips.insert(ip);
                            self.last_ip = index;
                            self.waiting.remove(&key);
                            // A new pod needs its hosts file, and may be a new endpoint.
                            self.synced = None;
                            self.pods.insert(key, s);
                        }
                        Err(e) => {
                            tracing::error!(namespace = %key.0, pod = %key.1, error = %e, "pod not started");
                            self.waiting.insert(
                                key,
                                Waiting {
                                    reason: "CreateContainerError".into(),
                                    message: e.to_string(),
                                },
                            );
                        }
                    }
                }
                Err(PrepareError::Waiting(w)) => {
                    if self.waiting.get(&key) != Some(&w) {
                        tracing::info!(namespace = %key.0, pod = %key.1, reason = %w.message, "pod waiting");
                    }
                    self.cleanup_failed(seq);
                    self.waiting.insert(key, w);
                }
                Err(PrepareError::Failed(e)) => {
                    tracing::error!(namespace = %key.0, pod = %key.1, error = %e, "pod sandbox not created");
                    self.cleanup_failed(seq);
                    self.waiting.insert(
                        key,
                        Waiting {
                            reason: "CreatePodSandboxError".into(),
                            message: e.to_string(),
                        },
                    );
                }
            }
        }
    }

    fn cleanup_failed(&self, seq: u32) {
        let name = format!("{}p{seq}", self.host.prefix);
        let _ = tokio::task::block_in_place(|| crate::netns::delete(&name));
    }

    /// Writes pod and controller status that changed.
    async fn report(&mut self, objects: &Objects) {
        let mut ops = Vec::new();
        for ((ns, name), s) in &self.pods {
            push_status(&mut ops, objects, ns, name, s.status());
        }
        for ((ns, name), w) in &self.waiting {
            let Some(Resource::Pod(p)) = objects
                .get(&ObjectKey::new(Kind::Pod, ns, name))
                .map(|s| &s.resource)
            else {
                continue;
            };
            let waiting = || ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(w.reason.clone()),
                    message: Some(w.message.clone()),
                }),
                ..Default::default()
            };
            let status = PodStatus {
                phase: Some("Pending".into()),
                conditions: vec![
                    PodCondition::of("PodScheduled", true),
                    PodCondition {
                        reason: Some(w.reason.clone()),
                        message: Some(w.message.clone()),
                        ..PodCondition::of("Ready", false)
                    },
                ],
                container_statuses: p
                    .spec
                    .containers
                    .iter()
                    .map(|c| ContainerStatus {
                        name: c.name.clone(),
                        image: c.image.clone(),
                        started: Some(false),
                        state: Some(waiting()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            push_status(&mut ops, objects, ns, name, status);
        }
        // LoadBalancer services are reachable on the host's loopback (Istio's INGRESS_HOST).
        for s in objects.iter() {
            let Resource::Service(svc) = &s.resource else {
                continue;
            };
            if svc.spec.r#type.as_deref() != Some("LoadBalancer") {
                continue;
            }
            let status =
                json!({"loadBalancer": {"ingress": [{"ip": self.host.ingress_ip.to_string()}]}});
            if svc.status.as_ref() != Some(&status) {
                ops.push(Op::Status {
                    key: ObjectKey::of(&s.resource),
                    status,
                });
            }
        }
        if !ops.is_empty() {
            if let Err(e) = self.control.submit(ops).await {
                tracing::debug!(errors = %e.join("; "), "pod status not written");
            }
        }
        let objects = self.control.objects();
        let ops = workloads::controller_status(&objects);
        if !ops.is_empty() {
            if let Err(e) = self.control.submit(ops).await {
                tracing::debug!(errors = %e.join("; "), "controller status not written");
            }
        }
    }
}

fn push_status(ops: &mut Vec<Op>, objects: &Objects, ns: &str, name: &str, status: PodStatus) {
    let key = ObjectKey::new(Kind::Pod, ns, name);
    let Some(stored) = objects.get(&key) else {
        return;
    };
    let current = match &stored.resource {
        Resource::Pod(p) => p.status.clone(),
        _ => None,
    };
    if current.as_ref() != Some(&status) {
        let status = serde_json::to_value(&status).unwrap_or_default();
        ops.push(Op::Status { key, status });
    }
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
