//! Controllers: Deployments and ReplicationControllers become pods (as Kubernetes'
//! controllers would make them), and report how many are ready. Pure: the runtime submits
//! the operations these return.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tessera_control::{ObjectKey, Objects, Op};
use tessera_model::kube::{Pod, PodTemplateSpec};
use tessera_model::meta::ObjectMeta;
use tessera_model::{Kind, Resource};

pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// One controller: a Deployment or a ReplicationController.
struct Controller<'a> {
    kind: &'static str,
    api_version: &'static str,
    namespace: &'a str,
    name: &'a str,
    uid: Option<&'a str>,
    replicas: usize,
    /// Pods it owns are replaced when their template hash differs (Deployments roll;
    /// ReplicationControllers keep their pods, as in Kubernetes).
    rolls: bool,
    template: &'a PodTemplateSpec,
}

fn controllers(objects: &Objects) -> Vec<Controller<'_>> {
    let mut out = Vec::new();
    for s in objects.iter() {
        match &s.resource {
            Resource::Deployment(d) => out.push(Controller {
                kind: "Deployment",
                api_version: "apps/v1",
                namespace: d.metadata.namespace.as_deref().unwrap_or("default"),
                name: &d.metadata.name,
                uid: d.metadata.uid.as_deref(),
                replicas: d.spec.replicas.unwrap_or(1).max(0) as usize,
                rolls: true,
                template: &d.spec.template,
            }),
            Resource::ReplicationController(rc) => out.push(Controller {
                kind: "ReplicationController",
                api_version: "v1",
                namespace: rc.metadata.namespace.as_deref().unwrap_or("default"),
                name: &rc.metadata.name,
                uid: rc.metadata.uid.as_deref(),
                replicas: rc.spec.replicas.unwrap_or(1).max(0) as usize,
                rolls: false,
                template: &rc.spec.template,
            }),
            _ => {}
        }
    }
    out
}

/// The controller that owns a pod: `(kind, name)` of its controller owner reference.
pub fn owner_of(meta: &ObjectMeta) -> Option<(String, String)> {
    let refs = meta.owner_references.as_ref()?.as_array()?;
    refs.iter()
        .find(|r| r["controller"] == Value::Bool(true))
        .and_then(|r| {
            Some((
                r["kind"].as_str()?.to_string(),
                r["name"].as_str()?.to_string(),
            ))
        })
}

/// The uid in a pod's controller owner reference, when it names one.
fn owner_uid(meta: &ObjectMeta) -> Option<&str> {
    let refs = meta.owner_references.as_ref()?.as_array()?;
    refs.iter()
        .find(|r| r["controller"] == Value::Bool(true))
        .and_then(|r| r["uid"].as_str())
}

/// A short, stable hash of a pod template (Kubernetes' `pod-template-hash`).
pub fn template_hash(t: &PodTemplateSpec) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let h = Sha256::digest(serde_json::to_vec(t).unwrap_or_default());
    h.iter()
        .take(10)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The pod operations that bring every controller to its replica count with its current
/// template, and delete pods whose controller is gone. `suffix` names new pods (five
/// characters, random in the runtime, fixed in tests).
pub fn reconcile(objects: &Objects, suffix: &mut dyn FnMut() -> String) -> Vec<Op> {
    let mut ops = Vec::new();
    let ctrls = controllers(objects);
    let mut owned: BTreeMap<(String, String, String), Vec<&Pod>> = BTreeMap::new();
    for s in objects.iter() {
        let Resource::Pod(p) = &s.resource else {
            continue;
        };
        if let Some((kind, name)) = owner_of(&p.metadata) {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            owned.entry((ns, kind, name)).or_default().push(p);
        }
    }
    // Pods whose controller is gone go with it (garbage collection). A controller
    // deleted and created again under the same name is another object (another uid):
    // the old one's pods go, as Kubernetes' garbage collector removes them.
    for ((ns, kind, name), pods) in owned.iter_mut() {
        let ctrl = ctrls
            .iter()
            .find(|c| c.namespace == ns && c.kind == kind && c.name == name);
        pods.retain(|p| {
            let theirs = match (ctrl, owner_uid(&p.metadata)) {
                (None, _) => false,
                (Some(c), Some(uid)) => c.uid.is_none_or(|cu| cu == uid),
                (Some(_), None) => true,
            };
            if !theirs {
                ops.push(delete(ns, &p.metadata.name));
            }
            theirs
        });
    }
    for c in &ctrls {
        let hash = template_hash(c.template);
        let pods = owned
            .get(&(
                c.namespace.to_string(),
                c.kind.to_string(),
                c.name.to_string(),
            ))
            .cloned()
            .unwrap_or_default();
        let (current, stale): (Vec<&Pod>, Vec<&Pod>) = pods
            .into_iter()
            .partition(|p| !c.rolls || p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash));
        for p in &stale {
            ops.push(delete(c.namespace, &p.metadata.name));
        }
        if current.len() > c.replicas {
            // The newest go first.
            let mut by_age: Vec<&&Pod> = current.iter().collect();
            by_age.sort_by(|a, b| {
                (&b.metadata.creation_timestamp, &b.metadata.name)
                    .cmp(&(&a.metadata.creation_timestamp, &a.metadata.name))
            });
            for p in by_age.iter().take(current.len() - c.replicas) {
                ops.push(delete(c.namespace, &p.metadata.name));
            }
        }
        for _ in current.len()..c.replicas {
            ops.push(Op::Create {
                origin: format!("{}/{}", c.kind.to_lowercase(), c.name),
                resource: Resource::Pod(new_pod(c, &hash, &suffix())),
            });
        }
    }
    ops
}

fn delete(ns: &str, name: &str) -> Op {
    Op::Delete {
        key: ObjectKey::new(Kind::Pod, ns, name),
        ignore_not_found: true,
    }
}

fn new_pod(c: &Controller<'_>, hash: &str, suffix: &str) -> Pod {
    let mut meta = c.template.metadata.clone();
    let name = if c.rolls {
        format!("{}-{hash}-{suffix}", c.name)
    } else {
        format!("{}-{suffix}", c.name)
    };
    meta.name = name;
    meta.generate_name = Some(format!("{}-", c.name));
    meta.namespace = Some(c.namespace.to_string());
    if c.rolls {
        meta.labels
            .insert(TEMPLATE_HASH_LABEL.into(), hash.to_string());
    }
    meta.owner_references = Some(json!([{
        "apiVersion": c.api_version,
        "kind": c.kind,
        "name": c.name,
        "uid": c.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]));
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: meta,
        spec: c.template.spec.clone(),
        status: None,
    }
}

/// Each controller's status (replicas, ready, up to date, available), as a status
/// operation when it differs from what is stored.
pub fn controller_status(objects: &Objects) -> Vec<Op> {
    let mut ops = Vec::new();
    for c in controllers(objects) {
        let hash = template_hash(c.template);
        let mut replicas = 0;
        let mut ready = 0;
        let mut updated = 0;
        for s in objects.list(Kind::Pod, Some(c.namespace), None) {
            let Resource::Pod(p) = &s.resource else {
                continue;
            };
            let owned = owner_of(&p.metadata).is_some_and(|(k, n)| k == c.kind && n == c.name);
            if !owned {
                continue;
            }
            replicas += 1;
            if !c.rolls || p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash) {
                updated += 1;
            }
            if pod_ready(p) {
                ready += 1;
            }
        }
        let status = if c.rolls {
            json!({"observedGeneration": 1, "replicas": replicas, "updatedReplicas": updated,
                   "readyReplicas": ready, "availableReplicas": ready})
        } else {
            json!({"replicas": replicas, "fullyLabeledReplicas": replicas,
                   "readyReplicas": ready, "availableReplicas": ready})
        };
        let kind = if c.rolls {
            Kind::Deployment
        } else {
            Kind::ReplicationController
        };
        let key = ObjectKey::new(kind, c.namespace, c.name);
        let stored = objects.get(&key).and_then(|s| match &s.resource {
            Resource::Deployment(d) => d.status.as_ref(),
            Resource::ReplicationController(rc) => rc.status.as_ref(),
            _ => None,
        });
        if stored != Some(&status) {
            ops.push(Op::Status { key, status });
        }
    }
    ops
}

/// Whether a pod's runtime reported it Ready.
pub fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.is_ready()) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_model::{load_str, LoadOptions};

    const APPS: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin, namespace: full}
spec:
  replicas: 2
  selector: {matchLabels: {app: httpbin}}
  template:
    metadata: {labels: {app: httpbin}}
    spec:
      serviceAccountName: httpbin
      containers: [{name: httpbin, image: docker.io/kennethreitz/httpbin}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: my-nginx, namespace: full}
spec:
  template:
    metadata: {labels: {run: my-nginx}}
    spec:
      containers: [{name: nginxhttps, image: bprashanth/nginxhttps:1.0}]
";

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn with(objects: &Objects, ops: Vec<Op>) -> Objects {
        objects.plan(ops, now()).unwrap().next
    }

    fn base(yaml: &str) -> Objects {
        let mut ops = vec![Op::Create {
            origin: "ns".into(),
            resource: tessera_control::objects::namespace_resource("full"),
        }];
        let report = load_str(
            std::path::Path::new("apps.yaml"),
            yaml,
            &LoadOptions::default(),
        );
        assert!(!report.has_errors());
        ops.extend(report.documents.into_iter().map(|l| Op::Apply {
            origin: "apps.yaml".into(),
            resource: l.resource,
        }));
        with(&Objects::default(), ops)
    }

    fn pods(objects: &Objects) -> Vec<String> {
        objects
            .list(Kind::Pod, Some("full"), None)
            .map(|s| s.resource.name().to_string())
            .collect()
    }

    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("x{n:04}")
        }
    }

    #[test]
    fn controllers_make_their_replicas_and_converge() {
        let mut next = counter();
        let objects = base(APPS);
        let ops = reconcile(&objects, &mut next);
        assert_eq!(ops.len(), 3, "{ops:?}");
        let objects = with(&objects, ops);
        let names = pods(&objects);
        assert_eq!(names.len(), 3);
        assert!(names.iter().any(|n| n == "my-nginx-x0003"), "{names:?}");
        let d_pod = objects
            .list(Kind::Pod, Some("full"), None)
            .find(|s| s.resource.name().starts_with("httpbin-"))
            .unwrap();
        let Resource::Pod(p) = &d_pod.resource else {
            unreachable!()
        };
        assert_eq!(
            owner_of(&p.metadata),
            Some(("Deployment".into(), "httpbin".into()))
        );
        assert_eq!(p.spec.service_account(), "httpbin");
        assert_eq!(p.metadata.labels["app"], "httpbin");
        // Converged: nothing more to do.
        assert!(reconcile(&objects, &mut next).is_empty());

        // A new template replaces the Deployment's pods; the RC's pods stay.
        let changed = APPS.replace("serviceAccountName: httpbin", "serviceAccountName: other");
        let report = load_str(
            std::path::Path::new("apps.yaml"),
            &changed,
            &LoadOptions::default(),
        );
        let objects = with(
            &objects,
            report
                .documents
                .into_iter()
                .map(|l| Op::Apply {
                    origin: "a".into(),
                    resource: l.resource,
                })
                .collect(),
        );
        let ops = reconcile(&objects, &mut next);
        let deletes = ops
            .iter()
            .filter(|o| matches!(o, Op::Delete { .. }))
            .count();
        let creates = ops
            .iter()
            .filter(|o| matches!(o, Op::Create { .. }))
            .count();
        assert_eq!((deletes, creates), (2, 2), "{ops:?}");

        // Deleting the controller deletes its pods.
        let objects = with(&objects, ops);
        let objects = with(
            &objects,
            vec![Op::Delete {
                key: ObjectKey::new(Kind::Deployment, "full", "httpbin"),
                ignore_not_found: false,
            }],
        );
        let objects = with(&objects, reconcile(&objects, &mut next));
        assert_eq!(pods(&objects), ["my-nginx-x0003"]);
    }

    #[test]
    fn a_controller_deleted_and_created_again_does_not_adopt_the_old_pods() {
        // Seed 000: `delete -f nginx-app.yaml`, then apply the injected one at once,
        // before the runtime has removed the old pod.
        let mut next = counter();
        let objects = base(APPS);
        let objects = with(&objects, reconcile(&objects, &mut next));
        let old: Vec<String> = pods(&objects)
            .into_iter()
            .filter(|n| n.starts_with("my-nginx-"))
            .collect();
        assert_eq!(old.len(), 1);
        let objects = with(
            &objects,
            vec![Op::Delete {
                key: ObjectKey::new(Kind::ReplicationController, "full", "my-nginx"),
                ignore_not_found: false,
            }],
        );
        let objects = base_on(&objects, APPS);
        let ops = reconcile(&objects, &mut next);
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::Delete { key, .. } if key.name == old[0])),
            "the old RC's pod goes: {ops:?}"
        );
        let objects = with(&objects, ops);
        let now: Vec<String> = pods(&objects)
            .into_iter()
            .filter(|n| n.starts_with("my-nginx-"))
            .collect();
        assert_eq!(now.len(), 1);
        assert_ne!(now, old, "a new pod from the new controller");
        assert!(reconcile(&objects, &mut next).is_empty());
    }

    /// Applies `yaml` on top of `objects`.
    fn base_on(objects: &Objects, yaml: &str) -> Objects {
        let report = load_str(
            std::path::Path::new("apps.yaml"),
            yaml,
            &LoadOptions::default(),
        );
        with(
            objects,
            report
                .documents
                .into_iter()
                .map(|l| Op::Apply {
                    origin: "apps.yaml".into(),
                    resource: l.resource,
                })
                .collect(),
        )
    }

    #[test]
    fn controller_status_counts_ready_pods() {
        let mut next = counter();
        let objects = base(APPS);
        let objects = with(&objects, reconcile(&objects, &mut next));
        let first = pods(&objects)
            .into_iter()
            .find(|n| n.starts_with("httpbin-"))
            .unwrap();
        let objects = with(
            &objects,
            vec![Op::Status {
                key: ObjectKey::new(Kind::Pod, "full", &first),
                status: json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
            }],
        );
        let ops = controller_status(&objects);
        assert_eq!(ops.len(), 2);
        let objects = with(&objects, ops);
        let d = objects
            .get(&ObjectKey::new(Kind::Deployment, "full", "httpbin"))
            .unwrap()
            .resource
            .to_json();
        assert_eq!(d["status"]["readyReplicas"], 1);
        assert_eq!(d["status"]["replicas"], 2);
        // Unchanged status: nothing to write.
        assert!(controller_status(&objects).is_empty());
    }
}
