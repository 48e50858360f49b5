//! The rules of changing one object, as the API server has them: apply and create (the
//! fields the server owns, kubectl's last-applied merge of labels and annotations, a kept
//! status), delete (a namespace takes its objects with it), label and status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tessera_model::kube::PodStatus;
use tessera_model::names::LAST_APPLIED_ANNOTATION as LAST_APPLIED;
use tessera_model::{Kind, Resource};

use super::{Change, Effect, ObjectKey, Objects, Outcome, Put, Stored, PROTECTED_NAMESPACES};

impl Objects {
    /// Deletes one object (a namespace with everything in it).
    pub(super) fn delete(
        &mut self,
        key: ObjectKey,
        ignore_not_found: bool,
    ) -> Result<Vec<(Outcome, Effect)>, String> {
        if key.kind == Kind::Namespace && PROTECTED_NAMESPACES.contains(&key.name.as_str()) {
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
                .map(|k| ObjectKey::clone(k))
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

    /// Sets and removes labels, as `kubectl label` does.
    pub(super) fn label(
        &mut self,
        key: ObjectKey,
        set: &BTreeMap<String, String>,
        remove: &[String],
        overwrite: bool,
        revision: u64,
    ) -> Result<Outcome, String> {
        let Some(stored) = self.map.get_mut(&key).map(Arc::make_mut) else {
            return Err(format!(
                "Error from server (NotFound): {} not found",
                key.quoted()
            ));
        };
        let labels = &mut stored.resource.metadata_mut().labels;
        let mut changed = false;
        for (k, v) in set {
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
        for k in remove {
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
        Ok(Outcome { key, change })
    }

    /// Replaces the status the runtime reports.
    pub(super) fn status(
        &mut self,
        key: ObjectKey,
        status: serde_json::Value,
        revision: u64,
    ) -> Result<Outcome, String> {
        let Some(stored) = self.map.get_mut(&key).map(Arc::make_mut) else {
            return Err(format!(
                "Error from server (NotFound): {} not found",
                key.quoted()
            ));
        };
        let changed = set_status(&mut stored.resource, status)?;
        if changed {
            stored.resource_version = revision;
            stored.resource.metadata_mut().resource_version = Some(revision.to_string());
        }
        let change = if changed {
            Change::Updated
        } else {
            Change::Unchanged
        };
        Ok(Outcome { key, change })
    }

    /// Writes one resource, as `how` says.
    pub(super) fn put(
        &mut self,
        origin: String,
        mut resource: Resource,
        how: Put,
        revision: u64,
        timestamp: &str,
    ) -> Result<Outcome, String> {
        let create_only = how == Put::Create;
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
        clear_server_fields(&mut resource);
        if how == Put::Apply {
            let applied = last_applied(&resource);
            if let Some(old) = old {
                keep_unmanaged_metadata(&mut resource, &old.resource);
            }
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
            m.generation = om.generation;
            // A write that names no field managers leaves ownership as it was.
            if m.managed_fields.is_none() {
                m.managed_fields = om.managed_fields;
            }
            keep_status(&mut resource, &old.resource);
        }
        if let Resource::Service(svc) = &mut resource {
            let old = old.and_then(|o| match &o.resource {
                Resource::Service(s) => Some(s),
                _ => None,
            });
            self.allocate(&key, svc, old).map_err(|e| {
                format!(
                    "Error from server (Invalid): {}",
                    context(format!("Service {:?} is invalid: {e}", key.name))
                )
            })?;
        }
        Ok(self.store(key, resource, revision, timestamp))
    }

    /// Keeps `resource` under `key`: unchanged, configured (a new resourceVersion) or
    /// created (a uid and creation time).
    fn store(
        &mut self,
        key: ObjectKey,
        mut resource: Resource,
        revision: u64,
        timestamp: &str,
    ) -> Outcome {
        let change = match self.map.get(&key) {
            Some(old) if old.resource == resource => Change::Unchanged,
            Some(old) => {
                let created_revision = old.created_revision;
                // As the API server: a change of anything but metadata and status is a
                // new generation of the object.
                let generation = old.resource.metadata().generation.unwrap_or(1);
                let spec_changed = without_metadata_and_status(&old.resource)
                    != without_metadata_and_status(&resource);
                let m = resource.metadata_mut();
                m.resource_version = Some(revision.to_string());
                m.generation = Some(generation + i64::from(spec_changed));
                self.map.insert(
                    Arc::new(key.clone()),
                    Arc::new(Stored {
                        resource,
                        resource_version: revision,
                        created_revision,
                    }),
                );
                Change::Configured
            }
            None => {
                let m = resource.metadata_mut();
                m.uid = Some(uid_from(&format!("{key}@{revision}")));
                m.generation = Some(1);
                m.creation_timestamp = Some(timestamp.to_string());
                m.resource_version = Some(revision.to_string());
                self.map.insert(
                    Arc::new(key.clone()),
                    Arc::new(Stored {
                        resource,
                        resource_version: revision,
                        created_revision: revision,
                    }),
                );
                Change::Created
            }
        };
        Outcome { key, change }
    }
}

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

/// Fields the server owns are not taken from a manifest. (Field managers are, as the API
/// server takes them.)
fn clear_server_fields(resource: &mut Resource) {
    let m = resource.metadata_mut();
    m.uid = None;
    m.resource_version = None;
    m.creation_timestamp = None;
    m.generation = None;
    m.self_link = None;
}

/// The object without its metadata and status: what a generation counts changes of.
fn without_metadata_and_status(r: &Resource) -> serde_json::Value {
    let mut v = r.to_json();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

/// As kubectl's apply: labels and annotations that others (`label`, the runtime) added to
/// `old` and no manifest ever set stay.
fn keep_unmanaged_metadata(resource: &mut Resource, old: &Resource) {
    let previous = old
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
    let om = old.metadata();
    let m = resource.metadata_mut();
    for (k, v) in &om.labels {
        if !managed_labels.contains(k) && !m.labels.contains_key(k) {
            m.labels.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in &om.annotations {
        if k != LAST_APPLIED && !managed_annotations.contains(k) && !m.annotations.contains_key(k) {
            m.annotations.insert(k.clone(), v.clone());
        }
    }
}

/// A uid (UUID-shaped) derived from `seed`: stable for the same seed.
pub(crate) fn uid_from(seed: &str) -> String {
    let h = Sha256::digest(seed);
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

/// The status slot of the kinds that report one, as JSON.
fn status_slot(r: &mut Resource) -> Option<&mut Option<serde_json::Value>> {
    match r {
        Resource::Deployment(d) => Some(&mut d.status),
        Resource::ReplicationController(d) => Some(&mut d.status),
        Resource::Service(s) => Some(&mut s.status),
        Resource::Namespace(n) => Some(&mut n.status),
        Resource::PeerAuthentication(o) => Some(&mut o.status),
        Resource::AuthorizationPolicy(o) => Some(&mut o.status),
        Resource::Policy(o) => Some(&mut o.status),
        Resource::MeshPolicy(o) => Some(&mut o.status),
        Resource::DestinationRule(o) => Some(&mut o.status),
        Resource::Sidecar(o) => Some(&mut o.status),
        Resource::Gateway(o) => Some(&mut o.status),
        Resource::VirtualService(o) => Some(&mut o.status),
        Resource::Pod(_)
        | Resource::ConfigMap(_)
        | Resource::Secret(_)
        | Resource::ServiceAccount(_) => None,
    }
}

/// A re-applied manifest without status keeps the status the runtime reported.
fn keep_status(new: &mut Resource, old: &Resource) {
    if let (Resource::Pod(new), Resource::Pod(old)) = (&mut *new, old) {
        if new.status.is_none() {
            new.status = old.status.clone();
        }
        return;
    }
    let mut old = old.clone();
    let old_status = status_slot(&mut old).and_then(|s| s.take());
    if let Some(slot) = status_slot(new) {
        if slot.is_none() {
            *slot = old_status;
        }
    }
}

/// Replaces the status; whether it changed. A pod's status must read as a `PodStatus`.
fn set_status(r: &mut Resource, status: serde_json::Value) -> Result<bool, String> {
    if let Resource::Pod(p) = r {
        let status: PodStatus = serde_json::from_value(status)
            .map_err(|e| format!("error: the pod status does not read as a PodStatus: {e}"))?;
        let changed = p.status.as_ref() != Some(&status);
        p.status = Some(status);
        return Ok(changed);
    }
    Ok(match status_slot(r) {
        Some(slot) if slot.as_ref() != Some(&status) => {
            *slot = Some(status);
            true
        }
        _ => false,
    })
}
