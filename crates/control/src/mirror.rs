//! Mirroring a Kubernetes API server into the store: what a watcher reports (an object
//! applied or deleted, or a whole relist after a restart or an expired watch) becomes the
//! store's operations, and only for what differs, so that a relist pushes nothing to the
//! proxies when nothing changed. Pure; the watchers are the caller's.

use serde_json::Value;
use tessera_model::{Kind, ObjectKey, Resource};

use crate::objects::{Objects, Op};

/// What a watcher reports.
#[derive(Debug, Clone)]
pub enum Event {
    Applied(Box<Resource>),
    Deleted(ObjectKey),
    /// Every object of `kind` the API server has now.
    Relisted {
        kind: Kind,
        objects: Vec<Resource>,
    },
}

/// The fields each side keeps for itself (the API server's and the store's versions,
/// uids and times differ and say nothing about the object).
fn content(r: &Resource) -> Value {
    let mut v = r.to_json();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    v
}

fn update(current: &Objects, r: Resource) -> Option<Op> {
    let unchanged = current
        .get(&ObjectKey::of(&r))
        .is_some_and(|s| content(&s.resource) == content(&r));
    (!unchanged).then(|| Op::Update {
        origin: "kubernetes".into(),
        resource: r,
    })
}

/// The operations that bring `current` to what `event` says.
pub fn ops(current: &Objects, event: Event) -> Vec<Op> {
    match event {
        Event::Applied(r) => update(current, *r).into_iter().collect(),
        Event::Deleted(key) => current
            .get(&key)
            .map(|_| Op::Delete {
                key,
                ignore_not_found: true,
            })
            .into_iter()
            .collect(),
        Event::Relisted { kind, objects } => {
            let listed: std::collections::BTreeSet<ObjectKey> =
                objects.iter().map(ObjectKey::of).collect();
            let gone = current
                .list(kind, None, None)
                .map(|s| ObjectKey::of(&s.resource))
                .filter(|k| !listed.contains(k))
                .map(|key| Op::Delete {
                    key,
                    ignore_not_found: true,
                })
                .collect::<Vec<_>>();
            objects
                .into_iter()
                .filter_map(|r| update(current, r))
                .chain(gone)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{at, load};

    fn store(text: &str) -> Objects {
        let o = Objects::default();
        let mut ops = o.bootstrap_ops();
        // Filled as mirroring fills it.
        ops.extend(
            load("k8s.yaml", text, "full")
                .into_iter()
                .map(|resource| Op::Update {
                    origin: "k8s.yaml".into(),
                    resource,
                }),
        );
        o.plan(ops, at(0)).unwrap().next
    }

    const TWO: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: full}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: full}\ndata: {k: v}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: full}\ndata: {k: v}\n";

    fn from_api(text: &str) -> Vec<Resource> {
        // As the API server returns them: its own versions, uids and times.
        load("api.yaml", text, "full")
            .into_iter()
            .map(|mut r| {
                let m = r.metadata_mut();
                m.resource_version = Some("98765".into());
                m.uid = Some("5c1f-api".into());
                m.creation_timestamp = Some("2026-01-01T00:00:00Z".into());
                r
            })
            .collect()
    }

    #[test]
    fn a_relist_changes_only_what_differs() {
        let current = store(TWO);
        // The same objects, as the API server has them: nothing to do.
        let same = from_api(TWO);
        let maps: Vec<Resource> = same
            .into_iter()
            .filter(|r| r.kind() == Kind::ConfigMap)
            .collect();
        assert!(ops(
            &current,
            Event::Relisted {
                kind: Kind::ConfigMap,
                objects: maps
            }
        )
        .is_empty());
        // One changed, one gone.
        let changed = from_api(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: full}\ndata: {k: w}\n",
        );
        let out = ops(
            &current,
            Event::Relisted {
                kind: Kind::ConfigMap,
                objects: changed,
            },
        );
        let described: Vec<String> = out
            .iter()
            .map(|op| match op {
                Op::Update { resource, .. } => format!("update {}", resource.name()),
                Op::Delete { key, .. } => format!("delete {}", key.name),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(described, ["update a", "delete b"]);
    }

    #[test]
    fn watch_events() {
        let current = store(TWO);
        let same = from_api(TWO).remove(1);
        assert!(
            ops(&current, Event::Applied(Box::new(same))).is_empty(),
            "an unchanged object is no change"
        );
        let key = ObjectKey::new(Kind::ConfigMap, "full", "b");
        assert_eq!(ops(&current, Event::Deleted(key)).len(), 1);
        let unknown = ObjectKey::new(Kind::ConfigMap, "full", "zzz");
        assert!(ops(&current, Event::Deleted(unknown)).is_empty());
    }
}
