//! The applied objects in memory and the rules of changing them, as the Kubernetes API
//! server has them: apply (create or update, "unchanged" when nothing differs), create
//! (AlreadyExists), delete (NotFound; a namespace takes its objects with it), label, and the
//! fields the server owns (uid, creationTimestamp, resourceVersion, Service clusterIP).
//!
//! [`Objects::plan`] is pure: it returns the next state, the writes that persist it and one
//! outcome per operation, or every error — never a partial result.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tessera_model::meta::LabelQuery;
use tessera_model::{Kind, LoadOptions, Resource};

use crate::store::{Row, Write};

/// Names one object: kind, namespace ("" for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: if kind.is_namespaced() {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    pub fn of(r: &Resource) -> ObjectKey {
        ObjectKey::new(r.kind(), r.namespace().unwrap_or(""), r.name())
    }

    /// From the store's columns (the kind by its manifest name).
    pub fn parse(kind: &str, namespace: &str, name: &str) -> Option<ObjectKey> {
        Some(ObjectKey::new(Kind::from_manifest(kind)?, namespace, name))
    }

    /// kubectl's `deployment.apps/httpbin` form.
    pub fn reference(&self) -> String {
        format!("{}/{}", type_name(self.kind), self.name)
    }

    /// kubectl's `deployments.apps "httpbin"` form (error messages).
    pub fn quoted(&self) -> String {
        let info = self.kind.info();
        let group = if info.group.is_empty() {
            String::new()
        } else {
            format!(".{}", info.group)
        };
        format!("{}{} {:?}", info.plural, group, self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// `deployment.apps`, `service`, `peerauthentication.security.istio.io`.
pub fn type_name(kind: Kind) -> String {
    let info = kind.info();
    let lower = info.name.to_ascii_lowercase();
    if info.group.is_empty() {
        lower
    } else {
        format!("{lower}.{}", info.group)
    }
}

/// One object as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub resource: Resource,
    pub resource_version: u64,
    /// The revision that created it; with the creation time, orders "oldest wins".
    pub created_revision: u64,
}

impl Stored {
    /// `(creation unix seconds, creation revision)`: the policies' ordering key.
    pub fn created(&self) -> (i64, u64) {
        let secs = self
            .resource
            .metadata()
            .creation_timestamp
            .as_deref()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or(0, |t| t.unix_timestamp());
        (secs, self.created_revision)
    }
}

/// A change an operator (or the runtime) asks for.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create or update. `origin` names the document in messages (`file.yaml:12`).
    Apply { origin: String, resource: Resource },
    /// Create only: an existing object is an error.
    Create { origin: String, resource: Resource },
    Delete {
        key: ObjectKey,
        ignore_not_found: bool,
    },
    /// `label KIND NAME k=v k2-`.
    Label {
        key: ObjectKey,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
        overwrite: bool,
    },
    /// The runtime reports a pod's (or any object's) status.
    Status {
        key: ObjectKey,
        status: serde_json::Value,
    },
}

/// What an operation did, kubectl's last word: created, configured, unchanged, deleted...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Configured,
    Unchanged,
    Deleted,
    Labeled,
    Unlabeled,
    Updated,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
            Change::Deleted => "deleted",
            Change::Labeled => "labeled",
            Change::Unlabeled => "unlabeled",
            Change::Updated => "updated",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub key: ObjectKey,
    pub change: Change,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.change {
            Change::Deleted => write!(
                f,
                "{} {:?} deleted",
                type_name(self.key.kind),
                self.key.name
            ),
            c => write!(f, "{} {c}", self.key.reference()),
        }
    }
}

/// What an operation did to one object, for the writes and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Written,
    Deleted,
    /// Deleted because its namespace was.
    DeletedWithParent,
}

/// The result of planning a batch: the next state, what to persist, what to report.
pub struct Plan {
    pub next: Objects,
    pub writes: Vec<Write>,
    pub outcomes: Vec<Outcome>,
}

/// The namespaces every mesh has.
pub const BUILTIN_NAMESPACES: &[&str] = &["default", "istio-system", "kube-system"];

/// Namespaces the API server refuses to delete, as Kubernetes does.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system"];

/// Service VIPs: 10.96.0.0/16, as kube-proxy's default service CIDR.
const SERVICE_CIDR: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 96, 0, 0), 16);

/// Every object, by key, at one revision.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    map: BTreeMap<ObjectKey, Stored>,
    revision: u64,
    /// The planning clock's nanoseconds: spreads node-port picks of different meshes.
    salt: u64,
}

impl Objects {
    /// Rebuilds the index from stored rows; a row that does not read back is an error.
    pub fn from_rows(rows: Vec<Row>, revision: u64) -> Result<Objects, (ObjectKey, String)> {
        let mut map = BTreeMap::new();
        for row in rows {
            let report =
                tessera_model::load_str(Path::new("store"), &row.body, &LoadOptions::default());
            let Some(doc) = report.documents.into_iter().next() else {
                let why = report
                    .problems
                    .first()
                    .map_or("no document".to_string(), |p| p.to_string());
                return Err((row.key, why));
            };
            map.insert(
                row.key,
                Stored {
                    resource: doc.resource,
                    resource_version: row.resource_version,
                    created_revision: row.created_revision,
                },
            );
        }
        Ok(Objects {
            map,
            revision,
            salt: 0,
        })
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Stored> {
        self.map.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.map.values()
    }

    /// Objects of one kind, in one namespace (or all), matching a label query.
    pub fn list<'a>(
        &'a self,
        kind: Kind,
        namespace: Option<&'a str>,
        labels: Option<&'a LabelQuery>,
    ) -> impl Iterator<Item = &'a Stored> + 'a {
        self.map.iter().filter_map(move |(k, v)| {
            (k.kind == kind
                && namespace.is_none_or(|ns| !kind.is_namespaced() || k.namespace == ns)
                && labels.is_none_or(|q| q.matches(&v.resource.metadata().labels)))
            .then_some(v)
        })
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.map
            .contains_key(&ObjectKey::new(Kind::Namespace, "", ns))
    }

    /// The operations that bring a new store to life: the built-in namespaces.
    pub fn bootstrap_ops(&self) -> Vec<Op> {
        BUILTIN_NAMESPACES
            .iter()
            .filter(|ns| !self.namespace_exists(ns))
            .map(|ns| Op::Apply {
                origin: "built-in".into(),
                resource: namespace_resource(ns),
            })
            .collect()
    }

    /// Plans a batch on a copy of the current state. Operations see the effects of the
    /// ones before them (a namespace created earlier in the batch exists for later ones).
    pub fn plan(&self, ops: Vec<Op>, now: time::OffsetDateTime) -> Result<Plan, Vec<String>> {
        let revision = self.revision + 1;
        let mut next = self.clone();
        next.revision = revision;
        next.salt = now.unix_timestamp_nanos() as u64;
        let mut touched: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut deleted: BTreeSet<ObjectKey> = BTreeSet::new();
        let mut outcomes = Vec::new();
        let mut errors = Vec::new();
        let timestamp = now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        for op in ops {
            match next.apply_op(op, revision, &timestamp) {
                Ok(list) => {
                    for (outcome, effect) in list {
                        match effect {
                            Effect::Deleted | Effect::DeletedWithParent => {
                                touched.remove(&outcome.key);
                                deleted.insert(outcome.key.clone());
                            }
                            Effect::Written if outcome.change != Change::Unchanged => {
                                deleted.remove(&outcome.key);
                                touched.insert(outcome.key.clone());
                            }
                            Effect::Written => {}
                        }
                        // kubectl reports the namespace, not what went with it.
                        if effect != Effect::DeletedWithParent {
                            outcomes.push(outcome);
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut writes: Vec<Write> = deleted.into_iter().map(Write::Delete).collect();
        for key in touched {
            let s = &next.map[&key];
            writes.push(Write::Put(Row {
                key: key.clone(),
                body: s.resource.to_json().to_string(),
                resource_version: s.resource_version,
                created_revision: s.created_revision,
            }));
        }
        if writes.is_empty() {
            // Nothing changed: the revision stays.
            next.revision = self.revision;
        }
        Ok(Plan {
            next,
            writes,
            outcomes,
        })
    }

    /// Applies one operation to `self`, saying what happened to each object.
    fn apply_op(
        &mut self,
        op: Op,
        revision: u64,
        timestamp: &str,
    ) -> Result<Vec<(Outcome, Effect)>, String> {
        match op {
            Op::Apply { origin, resource } => self
                .put(origin, resource, false, revision, timestamp)
                .map(|o| vec![(o, Effect::Written)]),
            Op::Create { origin, resource } => self
                .put(origin, resource, true, revision, timestamp)
                .map(|o| vec![(o, Effect::Written)]),
            Op::Delete {
                key,
                ignore_not_found,
            } => {
                if key.kind == Kind::Namespace && PROTECTED_NAMESPACES.contains(&key.name.as_str())
                {
                    return Err(format!(
                        "Error from server (Forbidden): namespaces {:?} is forbidden: this namespace may not be deleted",
                        key.name
                    ));
                }
                if self.map.remove(&key).is_none() {
                    return if ignore_not_found {
                        Ok(vec![])
                    } else {
                        Err(format!(
                            "Error from server (NotFound): {} not found",
                            key.quoted()
                        ))
                    };
                }
                let mut out = vec![(
                    Outcome {
                        key: key.clone(),
                        change: Change::Deleted,
                    },
                    Effect::Deleted,
                )];
                if key.kind == Kind::Namespace {
                    // The namespace takes everything in it along.
                    let inside: Vec<ObjectKey> = self
                        .map
                        .keys()
                        .filter(|k| k.kind.is_namespaced() && k.namespace == key.name)
                        .cloned()
                        .collect();
                    for k in inside {
                        self.map.remove(&k);
                        out.push((
                            Outcome {
                                key: k,
                                change: Change::Deleted,
                            },
                            Effect::DeletedWithParent,
                        ));
                    }
                }
                Ok(out)
            }
            Op::Label {
                key,
                set,
                remove,
                overwrite,
            } => {
                let Some(stored) = self.map.get_mut(&key) else {
                    return Err(format!(
                        "Error from server (NotFound): {} not found",
                        key.quoted()
                    ));
                };
                let labels = &mut stored.resource.metadata_mut().labels;
                let mut changed = false;
                for (k, v) in &set {
                    tessera_model::meta::validate_label_key(k)
                        .map_err(|e| format!("error: invalid label key {k:?}: {e}"))?;
                    tessera_model::meta::validate_label_value(v)
                        .map_err(|e| format!("error: invalid label value {v:?}: {e}"))?;
                    match labels.get(k) {
                        Some(old) if old == v => {}
                        Some(old) if !overwrite => {
                            return Err(format!(
                                "error: '{k}' already has a value ({old}), and --overwrite is false"
                            ))
                        }
                        _ => {
                            labels.insert(k.clone(), v.clone());
                            changed = true;
                        }
                    }
                }
                let mut removed = false;
                for k in &remove {
                    if labels.remove(k).is_some() {
                        removed = true;
                    }
                }
                let change = if !changed && !removed {
                    Change::Unchanged
                } else if changed {
                    Change::Labeled
                } else {
                    Change::Unlabeled
                };
                if change != Change::Unchanged {
                    stored.resource_version = revision;
                    stored.resource.metadata_mut().resource_version = Some(revision.to_string());
                }
                Ok(vec![(Outcome { key, change }, Effect::Written)])
            }
            Op::Status { key, status } => {
                let Some(stored) = self.map.get_mut(&key) else {
                    return Err(format!(
                        "Error from server (NotFound): {} not found",
                        key.quoted()
                    ));
                };
                let changed = set_status(&mut stored.resource, status);
                if changed {
                    stored.resource_version = revision;
                    stored.resource.metadata_mut().resource_version = Some(revision.to_string());
                }
                let change = if changed {
                    Change::Updated
                } else {
                    Change::Unchanged
                };
                Ok(vec![(Outcome { key, change }, Effect::Written)])
            }
        }
    }

    fn put(
        &mut self,
        origin: String,
        mut resource: Resource,
        create_only: bool,
        revision: u64,
        timestamp: &str,
    ) -> Result<Outcome, String> {
        let key = ObjectKey::of(&resource);
        let verb = if self.map.contains_key(&key) && !create_only {
            "applying"
        } else {
            "creating"
        };
        let context = |what: String| format!("error when {verb} {origin:?}: {what}");
        if key.kind.is_namespaced() && !self.namespace_exists(&key.namespace) {
            return Err(format!(
                "Error from server (NotFound): {}",
                context(format!("namespaces {:?} not found", key.namespace))
            ));
        }
        let old = self.map.get(&key);
        if create_only && old.is_some() {
            return Err(format!(
                "Error from server (AlreadyExists): {}",
                context(format!("{} already exists", key.quoted()))
            ));
        }
        // Fields the server owns.
        {
            let m = resource.metadata_mut();
            m.uid = None;
            m.resource_version = None;
            m.creation_timestamp = None;
            m.generation = None;
            m.managed_fields = None;
            m.self_link = None;
        }
        // As kubectl's apply: remember the manifest, and keep labels and annotations that
        // others (`label`, the runtime) added and no manifest ever set.
        let applied = last_applied(&resource);
        if let Some(old) = old.filter(|_| !create_only) {
            let previous = old
                .resource
                .metadata()
                .annotations
                .get(LAST_APPLIED)
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
            let managed = |field: &str| -> BTreeSet<String> {
                previous
                    .as_ref()
                    .and_then(|p| p["metadata"][field].as_object())
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default()
            };
            let (managed_labels, managed_annotations) = (managed("labels"), managed("annotations"));
            let om = old.resource.metadata();
            let m = resource.metadata_mut();
            for (k, v) in &om.labels {
                if !managed_labels.contains(k) && !m.labels.contains_key(k) {
                    m.labels.insert(k.clone(), v.clone());
                }
            }
            for (k, v) in &om.annotations {
                if k != LAST_APPLIED
                    && !managed_annotations.contains(k)
                    && !m.annotations.contains_key(k)
                {
                    m.annotations.insert(k.clone(), v.clone());
                }
            }
        }
        if !create_only {
            resource
                .metadata_mut()
                .annotations
                .insert(LAST_APPLIED.to_string(), applied);
        }
        if let Some(old) = old {
            let om = old.resource.metadata().clone();
            let m = resource.metadata_mut();
            m.uid = om.uid;
            m.creation_timestamp = om.creation_timestamp;
            m.resource_version = om.resource_version;
            keep_status(&mut resource, &old.resource);
        }
        if let Resource::Service(svc) = &mut resource {
            let old_ip = old.and_then(|o| match &o.resource {
                Resource::Service(s) => s.spec.cluster_ip.clone(),
                _ => None,
            });
            let ip = self
                .cluster_ip(&key, svc.spec.cluster_ip.as_deref(), old_ip.as_deref())
                .map_err(|e| {
                    format!(
                        "Error from server (Invalid): {}",
                        context(format!(
                            "Service {:?} is invalid: spec.clusterIP: {e}",
                            key.name
                        ))
                    )
                })?;
            svc.spec.cluster_ip = Some(ip.clone());
            svc.spec.cluster_ips = vec![ip];
            let old_svc = old.and_then(|o| match &o.resource {
                Resource::Service(s) => Some(s),
                _ => None,
            });
            self.node_ports(&key, svc, old_svc).map_err(|e| {
                format!(
                    "Error from server (Invalid): {}",
                    context(format!("Service {:?} is invalid: {e}", key.name))
                )
            })?;
        }
        if let Some(old) = old {
            if old.resource == resource {
                return Ok(Outcome {
                    key,
                    change: Change::Unchanged,
                });
            }
            let created_revision = old.created_revision;
            resource.metadata_mut().resource_version = Some(revision.to_string());
            self.map.insert(
                key.clone(),
                Stored {
                    resource,
                    resource_version: revision,
                    created_revision,
                },
            );
            return Ok(Outcome {
                key,
                change: Change::Configured,
            });
        }
        {
            let m = resource.metadata_mut();
            m.uid = Some(uid(&key, revision));
            m.creation_timestamp = Some(timestamp.to_string());
            m.resource_version = Some(revision.to_string());
        }
        self.map.insert(
            key.clone(),
            Stored {
                resource,
                resource_version: revision,
                created_revision: revision,
            },
        );
        Ok(Outcome {
            key,
            change: Change::Created,
        })
    }

    /// The clusterIP a Service gets: its current one (immutable), the one asked for when
    /// free and inside the service range, "None" for headless, else the next free address.
    fn cluster_ip(
        &self,
        key: &ObjectKey,
        asked: Option<&str>,
        current: Option<&str>,
    ) -> Result<String, String> {
        let asked = asked.filter(|a| !a.is_empty());
        if let Some(cur) = current {
            return match asked {
                Some(a) if a != cur => Err(format!("Invalid value: {a:?}: field is immutable")),
                _ => Ok(cur.to_string()),
            };
        }
        let used: BTreeSet<String> = self
            .map
            .iter()
            .filter(|(k, _)| k.kind == Kind::Service && *k != key)
            .filter_map(|(_, s)| match &s.resource {
                Resource::Service(svc) => svc.spec.cluster_ip.clone(),
                _ => None,
            })
            .collect();
        let (base, bits) = SERVICE_CIDR;
        let base = u32::from(base);
        let size = 1u32 << (32 - bits);
        match asked {
            Some("None") => Ok("None".into()),
            Some(a) => {
                let ip: Ipv4Addr = a.parse().map_err(|_| {
                    format!("Invalid value: {a:?}: must be a valid IP address or \"None\"")
                })?;
                let n = u32::from(ip);
                if n < base || n >= base + size {
                    return Err(format!(
                        "Invalid value: {a:?}: provided IP is not in the valid range. The range of valid IPs is {}/{bits}",
                        Ipv4Addr::from(base)
                    ));
                }
                if used.contains(a) {
                    return Err(format!(
                        "Invalid value: {a:?}: provided IP is already allocated"
                    ));
                }
                Ok(a.to_string())
            }
            None => {
                // .0 is the network, .1 is kept for the API server as in Kubernetes.
                (2..size - 1)
                    .map(|i| Ipv4Addr::from(base + i).to_string())
                    .find(|ip| !used.contains(ip))
                    .ok_or_else(|| "Invalid value: \"\": the service range is full".to_string())
            }
        }
    }
}

impl Objects {
    /// NodePort and LoadBalancer services get a node port per port, as the API server
    /// allocates them: the one asked for (in range, not taken), the port's current one, or
    /// a free one picked pseudo-randomly (so two meshes on one host rarely pick the same
    /// host port). The local runtime publishes them on 127.0.0.1.
    fn node_ports(
        &self,
        key: &ObjectKey,
        svc: &mut tessera_model::kube::Service,
        old: Option<&tessera_model::kube::Service>,
    ) -> Result<(), String> {
        let published = matches!(
            svc.spec.r#type.as_deref(),
            Some("NodePort") | Some("LoadBalancer")
        );
        if !published {
            for (i, p) in svc.spec.ports.iter().enumerate() {
                if p.node_port.is_some() {
                    return Err(format!(
                        "spec.ports[{i}].nodePort: Forbidden: may not be used when `type` is '{}'",
                        svc.spec.r#type.as_deref().unwrap_or("ClusterIP")
                    ));
                }
            }
            return Ok(());
        }
        let mut used: BTreeSet<i32> = self
            .map
            .iter()
            .filter(|(k, _)| k.kind == Kind::Service && *k != key)
            .filter_map(|(_, s)| match &s.resource {
                Resource::Service(svc) => Some(svc.spec.ports.iter().filter_map(|p| p.node_port)),
                _ => None,
            })
            .flatten()
            .collect();
        let (lo, hi) = NODE_PORT_RANGE;
        for (i, p) in svc.spec.ports.iter_mut().enumerate() {
            if let Some(asked) = p.node_port {
                if !(lo..=hi).contains(&asked) {
                    return Err(format!(
                        "spec.ports[{i}].nodePort: Invalid value: {asked}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                    ));
                }
                if !used.insert(asked) {
                    return Err(format!(
                        "spec.ports[{i}].nodePort: Invalid value: {asked}: provided port is already allocated"
                    ));
                }
                continue;
            }
            let current = old.and_then(|o| {
                o.spec
                    .ports
                    .iter()
                    .find(|op| op.port == p.port && op.name == p.name)
                    .and_then(|op| op.node_port)
            });
            let pick = match current.filter(|c| !used.contains(c)) {
                Some(c) => c,
                None => {
                    let span = (hi - lo + 1) as u64;
                    let seed = fnv(&format!(
                        "{}/{}/{}/{}",
                        key.namespace, key.name, p.port, self.salt
                    ));
                    (0..span)
                        .map(|k| lo + ((seed + k) % span) as i32)
                        .find(|c| !used.contains(c))
                        .ok_or_else(|| {
                            format!(
                                "spec.ports[{i}].nodePort: the node port range {lo}-{hi} is full"
                            )
                        })?
                }
            };
            used.insert(pick);
            p.node_port = Some(pick);
        }
        Ok(())
    }
}

/// Node ports, as the Kubernetes default.
const NODE_PORT_RANGE: (i32, i32) = (30000, 32767);

/// FNV-1a: a spread of node ports over the range, from the service's name and the planning
/// clock (pure: the same plan at the same instant picks the same port).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where apply keeps the manifest it applied, as kubectl does.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manifest as the operator wrote it (no server-owned fields, no status).
fn last_applied(r: &Resource) -> String {
    let mut v = r.to_json();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(m) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            if let Some(a) = m.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                a.remove(LAST_APPLIED);
                if a.is_empty() {
                    m.remove("annotations");
                }
            }
        }
    }
    v.to_string()
}

/// A Namespace object with only a name.
pub fn namespace_resource(name: &str) -> Resource {
    let mut ns = tessera_model::kube::Namespace {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        ..Default::default()
    };
    ns.metadata.name = name.to_string();
    Resource::Namespace(ns)
}

fn uid(key: &ObjectKey, revision: u64) -> String {
    let h = Sha256::digest(format!("{key}@{revision}"));
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn status_of(r: &Resource) -> Option<&serde_json::Value> {
    match r {
        Resource::Pod(p) => p.status.as_ref(),
        Resource::Deployment(d) => d.status.as_ref(),
        Resource::ReplicationController(d) => d.status.as_ref(),
        Resource::Service(s) => s.status.as_ref(),
        Resource::Namespace(n) => n.status.as_ref(),
        _ => None,
    }
}

fn status_mut(r: &mut Resource) -> Option<&mut Option<serde_json::Value>> {
    match r {
        Resource::Pod(p) => Some(&mut p.status),
        Resource::Deployment(d) => Some(&mut d.status),
        Resource::ReplicationController(d) => Some(&mut d.status),
        Resource::Service(s) => Some(&mut s.status),
        Resource::Namespace(n) => Some(&mut n.status),
        _ => None,
    }
}

/// A re-applied manifest without status keeps the status the runtime reported.
fn keep_status(new: &mut Resource, old: &Resource) {
    let old_status = status_of(old).cloned();
    if let Some(slot) = status_mut(new) {
        if slot.is_none() {
            *slot = old_status;
        }
    }
}

fn set_status(r: &mut Resource, status: serde_json::Value) -> bool {
    match status_mut(r) {
        Some(slot) if slot.as_ref() != Some(&status) => {
            *slot = Some(status);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Resource {
        let report = tessera_model::load_str(Path::new("t.yaml"), text, &LoadOptions::default());
        assert!(!report.has_errors(), "{:?}", report.problems);
        report.documents.into_iter().next().unwrap().resource
    }

    fn apply(text: &str) -> Op {
        Op::Apply {
            origin: "t.yaml".into(),
            resource: load(text),
        }
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn base() -> Objects {
        let o = Objects::default();
        o.plan(o.bootstrap_ops(), now()).unwrap().next
    }

    fn svc(name: &str, ip: Option<&str>) -> Op {
        let ip = ip.map_or(String::new(), |ip| format!("  clusterIP: {ip}\n"));
        apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{ip}  ports: [{{port: 80}}]\n"
        ))
    }

    fn one_error(objects: &Objects, ops: Vec<Op>) -> String {
        let errors = objects.plan(ops, now()).err().expect("refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].clone()
    }

    #[test]
    fn service_vips_follow_the_api_servers_rules() {
        let o = base();
        let o = o.plan(vec![svc("a", None)], now()).unwrap().next;
        let ip = |o: &Objects, name: &str| match &o
            .get(&ObjectKey::new(Kind::Service, "default", name))
            .unwrap()
            .resource
        {
            Resource::Service(s) => s.spec.cluster_ip.clone().unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(ip(&o, "a"), "10.96.0.2");
        // Re-applying without clusterIP keeps it and is "unchanged".
        let plan = o.plan(vec![svc("a", None)], now()).unwrap();
        assert_eq!(plan.outcomes[0].change, Change::Unchanged);
        assert!(plan.writes.is_empty());
        for (op, want) in [
            (
                svc("a", Some("10.96.0.9")),
                "spec.clusterIP: Invalid value: \"10.96.0.9\": field is immutable",
            ),
            (
                svc("b", Some("10.96.0.2")),
                "provided IP is already allocated",
            ),
            (
                svc("b", Some("10.97.0.1")),
                "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16",
            ),
        ] {
            let e = one_error(&o, vec![op]);
            assert!(e.contains(want), "{e}");
        }
        let o = o
            .plan(vec![svc("h", Some("None")), svc("b", None)], now())
            .unwrap()
            .next;
        assert_eq!(ip(&o, "h"), "None");
        assert_eq!(ip(&o, "b"), "10.96.0.3");
    }

    #[test]
    fn kubectl_errors_and_outcomes() {
        let o = base();
        let e = one_error(
            &o,
            vec![Op::Delete {
                key: ObjectKey::new(Kind::Namespace, "", "default"),
                ignore_not_found: false,
            }],
        );
        assert_eq!(e, "Error from server (Forbidden): namespaces \"default\" is forbidden: this namespace may not be deleted");
        let e = one_error(
            &o,
            vec![Op::Create {
                origin: "ns.yaml".into(),
                resource: namespace_resource("istio-system"),
            }],
        );
        assert_eq!(e, "Error from server (AlreadyExists): error when creating \"ns.yaml\": namespaces \"istio-system\" already exists");
        // A namespace created earlier in the batch exists for later operations.
        let plan = o
            .plan(
                vec![
                    Op::Apply {
                        origin: "ns.yaml".into(),
                        resource: namespace_resource("full"),
                    },
                    apply(
                        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: full}\n",
                    ),
                ],
                now(),
            )
            .unwrap();
        let words: Vec<String> = plan.outcomes.iter().map(|o| o.to_string()).collect();
        assert_eq!(words, ["namespace/full created", "configmap/c created"]);
        assert_eq!(
            plan.next.revision(),
            o.revision() + 1,
            "one batch, one revision"
        );
    }

    #[test]
    fn status_reported_by_the_runtime_survives_a_reapply() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: i}]\n";
        let o = base();
        let o = o.plan(vec![apply(pod)], now()).unwrap().next;
        let key = ObjectKey::new(Kind::Pod, "default", "p");
        let status = serde_json::json!({"phase": "Running", "podIP": "10.244.0.5"});
        let plan = o
            .plan(
                vec![Op::Status {
                    key: key.clone(),
                    status: status.clone(),
                }],
                now(),
            )
            .unwrap();
        assert_eq!(plan.outcomes[0].change, Change::Updated);
        let o = plan.next;
        let plan = o.plan(vec![apply(pod)], now()).unwrap();
        assert_eq!(plan.outcomes[0].change, Change::Unchanged);
        match &plan.next.get(&key).unwrap().resource {
            Resource::Pod(p) => assert_eq!(p.status.as_ref(), Some(&status)),
            _ => unreachable!(),
        }
    }
}
