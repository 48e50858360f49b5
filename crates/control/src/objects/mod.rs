//! The applied objects in memory and the rules of changing them, as the Kubernetes API
//! server has them: apply (create or update, "unchanged" when nothing differs), create
//! (AlreadyExists), delete (NotFound; a namespace takes its objects with it), label, and the
//! fields the server owns (uid, creationTimestamp, resourceVersion, Service clusterIP).
//!
//! [`Objects::plan`] is pure: it returns the next state, the writes that persist it and one
//! outcome per operation, or every error — never a partial result.

mod alloc;
mod change;

pub(crate) use change::uid_from;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_model::meta::LabelQuery;
use tessera_model::resource::type_name;
pub use tessera_model::ObjectKey;
use tessera_model::{Kind, LoadOptions, Resource};

use crate::store::{Row, Write};
pub use tessera_model::names::LAST_APPLIED_ANNOTATION as LAST_APPLIED;

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
    /// Create or replace with the object as given, as the Kubernetes API's writes do:
    /// no last-applied bookkeeping, and labels and annotations are the given ones.
    Update { origin: String, resource: Resource },
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

/// How an object is written: created only, applied (`tessera apply`: the last-applied
/// configuration is kept, and labels others added stay), or updated as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Create,
    Apply,
    Update,
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

/// Every object, by key, at one revision.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Shared between revisions: a revision copies the index, not the objects (the watch
    /// history keeps hundreds of revisions).
    map: BTreeMap<Arc<ObjectKey>, Arc<Stored>>,
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
                Arc::new(row.key),
                Arc::new(Stored {
                    resource: doc.resource,
                    resource_version: row.resource_version,
                    created_revision: row.created_revision,
                }),
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
        self.map.get(key).map(|s| &**s)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.map.values().map(|s| &**s)
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
            .then_some(&**v)
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
}

impl Objects {
    /// Applies one operation to `self`, saying what happened to each object.
    fn apply_op(
        &mut self,
        op: Op,
        revision: u64,
        timestamp: &str,
    ) -> Result<Vec<(Outcome, Effect)>, String> {
        let written = |o: Outcome| vec![(o, Effect::Written)];
        match op {
            Op::Apply { origin, resource } => self
                .put(origin, resource, Put::Apply, revision, timestamp)
                .map(written),
            Op::Create { origin, resource } => self
                .put(origin, resource, Put::Create, revision, timestamp)
                .map(written),
            Op::Update { origin, resource } => self
                .put(origin, resource, Put::Update, revision, timestamp)
                .map(written),
            Op::Delete {
                key,
                ignore_not_found,
            } => self.delete(key, ignore_not_found),
            Op::Label {
                key,
                set,
                remove,
                overwrite,
            } => self
                .label(key, &set, &remove, overwrite, revision)
                .map(written),
            Op::Status { key, status } => self.status(key, status, revision).map(written),
        }
    }
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
            Resource::Pod(p) => assert_eq!(
                p.status.as_ref().map(|s| serde_json::to_value(s).unwrap()),
                Some(status)
            ),
            _ => unreachable!(),
        }
    }
}
