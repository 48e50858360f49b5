//! Field ownership, as the API server records it in `metadata.managedFields`: which
//! manager (`kubectl-client-side-apply`, `kubectl-label`, `kubectl` for server-side
//! apply...) set which fields of an object, by what operation (`Update` or `Apply`).
//!
//! A field is a path of `fieldsV1` keys: `f:spec`, `f:mtls`, `f:mode` for an object's
//! fields and `k:{"name":"app"}` for an element of a list with a merge key (containers
//! by name...); other lists are owned whole. An update takes the fields it changes from
//! every other manager. A server-side apply owns exactly the fields of its configuration:
//! it conflicts with another manager's field it would change (unless forced), and the
//! fields it stops naming, that no one else owns, are removed.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::patch::{merge_key, strategic_merge_patch};

/// One field: its `fieldsV1` keys from the object's root.
pub type Field = Vec<String>;
pub type FieldSet = BTreeSet<Field>;

/// One entry of `managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manager {
    pub manager: String,
    /// `Update` or `Apply`.
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

/// What the server keeps for itself: never owned by a manager.
fn server_owned(path: &[&str]) -> bool {
    matches!(
        path,
        ["apiVersion"]
            | ["kind"]
            | ["status"]
            | [
                "metadata",
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "managedFields"
                    | "selfLink"
                    | "deletionTimestamp"
            ]
    )
}

/// The fields `object` sets.
pub fn fields_of(object: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk(object, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

fn walk(value: &Value, names: &mut Vec<String>, field: &mut Field, out: &mut FieldSet) {
    let Value::Object(map) = value else {
        out.insert(field.clone());
        return;
    };
    if map.is_empty() && !field.is_empty() {
        out.insert(field.clone());
        return;
    }
    for (k, v) in map {
        names.push(k.clone());
        let path: Vec<&str> = names.iter().map(String::as_str).collect();
        if server_owned(&path) {
            names.pop();
            continue;
        }
        field.push(format!("f:{k}"));
        match v {
            Value::Array(elements) => match keyed(k, elements) {
                Some(key) => {
                    for e in elements {
                        field.push(element_key(key, e));
                        out.insert(with(field, "."));
                        walk(e, names, field, out);
                        field.pop();
                    }
                    if elements.is_empty() {
                        out.insert(field.clone());
                    }
                }
                None => {
                    out.insert(field.clone());
                }
            },
            Value::Object(m) if !m.is_empty() => walk(v, names, field, out),
            _ => {
                out.insert(field.clone());
            }
        }
        field.pop();
        names.pop();
    }
}

fn with(field: &Field, last: &str) -> Field {
    let mut f = field.clone();
    f.push(last.to_string());
    f
}

/// The merge key of a list whose elements all carry it.
fn keyed(name: &str, elements: &[Value]) -> Option<&'static str> {
    merge_key(name, elements).filter(|key| elements.iter().all(|e| e.get(*key).is_some()))
}

fn element_key(key: &str, element: &Value) -> String {
    format!("k:{}", json!({ key: element[key] }))
}

/// The value at `field` in `object`, if it is there.
pub fn value_at<'a>(object: &'a Value, field: &[String]) -> Option<&'a Value> {
    let mut at = object;
    for k in field {
        if k == "." {
            continue;
        }
        at = if let Some(name) = k.strip_prefix("f:") {
            at.get(name)?
        } else {
            let id: Value = serde_json::from_str(k.strip_prefix("k:")?).ok()?;
            let (key, want) = id.as_object()?.iter().next()?;
            at.as_array()?.iter().find(|e| e.get(key) == Some(want))?
        };
    }
    Some(at)
}

/// Removes `field` from `object` (a field of an object, or an element of a keyed list).
pub fn remove(object: &mut Value, field: &[String]) {
    let field: Vec<&String> = field.iter().filter(|k| *k != ".").collect();
    let Some((last, parents)) = field.split_last() else {
        return;
    };
    let mut at = object;
    for k in parents {
        let next = if let Some(name) = k.strip_prefix("f:") {
            at.get_mut(name)
        } else {
            let Some(id) = k
                .strip_prefix("k:")
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
            else {
                return;
            };
            let Some((key, want)) = id.as_object().and_then(|o| o.iter().next()) else {
                return;
            };
            at.as_array_mut()
                .and_then(|l| l.iter_mut().find(|e| e.get(key) == Some(want)))
        };
        match next {
            Some(n) => at = n,
            None => return,
        }
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(o) = at.as_object_mut() {
            o.remove(name);
        }
    } else if let Some(id) = last
        .strip_prefix("k:")
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    {
        if let (Some((key, want)), Some(list)) = (
            id.as_object().and_then(|o| o.iter().next()),
            at.as_array_mut(),
        ) {
            list.retain(|e| e.get(key) != Some(want));
        }
    }
}

/// A field as the API server names it in a conflict: `.spec.containers[name="app"].image`.
pub fn display(field: &[String]) -> String {
    let mut out = String::new();
    for k in field {
        if let Some(name) = k.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(id) = k
            .strip_prefix("k:")
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        {
            if let Some((key, v)) = id.as_object().and_then(|o| o.iter().next()) {
                out.push_str(&format!("[{key}={v}]"));
            }
        }
    }
    out
}

/// `fieldsV1`: the set as nested objects of its keys.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for field in set {
        let mut at = &mut root;
        for k in field {
            at = at
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("built as objects");
        }
    }
    Value::Object(root)
}

/// The fields of a `fieldsV1` value: its leaves.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, field: &mut Field, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    field.push(k.clone());
                    go(child, field, out);
                    field.pop();
                }
            }
            _ if !field.is_empty() => {
                out.insert(field.clone());
            }
            _ => {}
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// The managers recorded on an object (`metadata.managedFields`).
pub fn managers(object: &Value) -> Vec<Manager> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e.get("subresource").is_none())
        .map(|e| Manager {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("Update").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            time: e["time"].as_str().unwrap_or("").to_string(),
            fields: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

/// `metadata.managedFields` for `managers`.
pub fn managed_fields(managers: &[Manager]) -> Value {
    Value::Array(
        managers
            .iter()
            .map(|m| {
                json!({
                    "manager": m.manager,
                    "operation": m.operation,
                    "apiVersion": m.api_version,
                    "time": m.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": to_fields_v1(&m.fields),
                })
            })
            .collect(),
    )
}

/// Who is writing: the manager's name, the API version it writes at, and when.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub time: &'a str,
}

/// Ownership after an update (create, replace, patch) from `old` (`None`: a create) to
/// `new`: the writer takes every field it changed from the others, and fields that are
/// gone are nobody's.
pub fn after_update(
    managers: &[Manager],
    old: Option<&Value>,
    new: &Value,
    writer: &Writer,
) -> Vec<Manager> {
    let new_fields = fields_of(new);
    let old_fields = old.map(fields_of).unwrap_or_default();
    let changed: FieldSet = new_fields
        .iter()
        .filter(|f| old.and_then(|o| value_at(o, f)) != value_at(new, f))
        .cloned()
        .collect();
    let gone: FieldSet = old_fields.difference(&new_fields).cloned().collect();
    let mut out: Vec<Manager> = managers
        .iter()
        .cloned()
        .map(|mut m| {
            m.fields.retain(|f| !gone.contains(f));
            if !(m.manager == writer.manager && m.operation == "Update") {
                m.fields.retain(|f| !changed.contains(f));
            }
            m
        })
        .collect();
    if !changed.is_empty() {
        match out
            .iter_mut()
            .find(|m| m.manager == writer.manager && m.operation == "Update")
        {
            Some(m) => {
                m.fields.extend(changed);
                m.time = writer.time.to_string();
                m.api_version = writer.api_version.to_string();
            }
            None => out.push(Manager {
                manager: writer.manager.to_string(),
                operation: "Update".into(),
                api_version: writer.api_version.to_string(),
                time: writer.time.to_string(),
                fields: changed,
            }),
        }
    }
    out.retain(|m| !m.fields.is_empty());
    out
}

/// A field another manager owns with another value than the applied one.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: Field,
}

/// A server-side apply of `applied` over `current`: the object it makes and the new
/// ownership, or the conflicts that stop it (unless `force`, which takes the fields).
pub fn apply(
    managers: &[Manager],
    current: &Value,
    applied: &Value,
    writer: &Writer,
    force: bool,
) -> Result<(Value, Vec<Manager>), Vec<Conflict>> {
    let applied_fields = fields_of(applied);
    let mut conflicts = Vec::new();
    for m in managers.iter().filter(|m| m.manager != writer.manager) {
        for f in m.fields.intersection(&applied_fields) {
            if f.last().map(String::as_str) != Some(".")
                && value_at(current, f) != value_at(applied, f)
            {
                conflicts.push(Conflict {
                    manager: m.manager.clone(),
                    api_version: m.api_version.clone(),
                    field: f.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut object = current.clone();
    strategic_merge_patch(&mut object, applied);
    let before: FieldSet = managers
        .iter()
        .find(|m| m.manager == writer.manager && m.operation == "Apply")
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let taken: FieldSet = conflicts.iter().map(|c| c.field.clone()).collect();
    let mut out: Vec<Manager> = managers
        .iter()
        .filter(|m| !(m.manager == writer.manager && m.operation == "Apply"))
        .cloned()
        .map(|mut m| {
            m.fields.retain(|f| !taken.contains(f));
            m
        })
        .collect();
    // What this manager applied before and no longer names goes, unless someone else
    // owns it too.
    for f in before.difference(&applied_fields) {
        if !out.iter().any(|m| m.fields.contains(f)) {
            remove(&mut object, f);
        }
    }
    out.push(Manager {
        manager: writer.manager.to_string(),
        operation: "Apply".into(),
        api_version: writer.api_version.to_string(),
        time: writer.time.to_string(),
        fields: applied_fields,
    });
    out.retain(|m| !m.fields.is_empty());
    Ok((object, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(keys: &[&str]) -> Field {
        keys.iter().map(|k| k.to_string()).collect()
    }

    const W: Writer = Writer {
        manager: "kubectl",
        api_version: "v1",
        time: "2026-01-01T00:00:00Z",
    };

    #[test]
    fn fields_of_an_object_with_keyed_and_atomic_lists() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "a"}, "uid": "x"},
            "spec": {"containers": [{"name": "c", "image": "i", "args": ["a", "b"]}]},
            "status": {"phase": "Running"},
        });
        let f = fields_of(&pod);
        let want: FieldSet = [
            field(&["f:metadata", "f:labels", "f:app"]),
            field(&["f:spec", "f:containers", "k:{\"name\":\"c\"}", "."]),
            field(&["f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:args"]),
            field(&["f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:image"]),
            field(&["f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:name"]),
        ]
        .into_iter()
        .collect();
        assert_eq!(f, want);
        assert_eq!(from_fields_v1(&to_fields_v1(&f)), f);
        let image = field(&["f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:image"]);
        assert_eq!(value_at(&pod, &image), Some(&json!("i")));
        assert_eq!(display(&image), ".spec.containers[name=\"c\"].image");
    }

    #[test]
    fn an_update_takes_the_fields_it_changes() {
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"mtls": {"mode": "STRICT"}}});
        let created = after_update(
            &[],
            None,
            &old,
            &Writer {
                manager: "kubectl-create",
                ..W
            },
        );
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].fields.len(), 2);
        let new = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"mtls": {"mode": "STRICT"}}});
        let labelled = after_update(
            &created,
            Some(&old),
            &new,
            &Writer {
                manager: "kubectl-label",
                ..W
            },
        );
        let label = labelled
            .iter()
            .find(|m| m.manager == "kubectl-label")
            .unwrap();
        assert_eq!(
            label.fields,
            [field(&["f:metadata", "f:labels", "f:b"])]
                .into_iter()
                .collect()
        );
        // A field that goes is nobody's; a manager left with nothing is dropped.
        let unlabelled = after_update(
            &labelled,
            Some(&new),
            &old,
            &Writer {
                manager: "kubectl-label",
                ..W
            },
        );
        assert!(unlabelled.iter().all(|m| m.manager != "kubectl-label"));
    }

    #[test]
    fn apply_conflicts_forces_and_removes_what_it_stops_naming() {
        let current = json!({"spec": {"mtls": {"mode": "STRICT"}}});
        let editor = after_update(
            &[],
            None,
            &current,
            &Writer {
                manager: "kubectl-edit",
                ..W
            },
        );
        let applied = json!({"spec": {"mtls": {"mode": "DISABLE"}}});
        let conflicts = apply(&editor, &current, &applied, &W, false).unwrap_err();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].manager, "kubectl-edit");
        assert_eq!(display(&conflicts[0].field), ".spec.mtls.mode");
        // The same value is shared, not a conflict.
        let (object, owners) = apply(&editor, &current, &current, &W, false).unwrap();
        assert_eq!(object, current);
        assert_eq!(owners.len(), 2);
        // Forced: the field changes hands.
        let (object, owners) = apply(&editor, &current, &applied, &W, true).unwrap();
        assert_eq!(object["spec"]["mtls"]["mode"], "DISABLE");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].manager, "kubectl");
        // A field the applier stops naming, owned by no one else, is removed.
        let two = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let (object, owners) = apply(&[], &json!({}), &two, &W, false).unwrap();
        let one = json!({"metadata": {"labels": {"a": "1"}}});
        let (object, _) = apply(&owners, &object, &one, &W, false).unwrap();
        assert_eq!(object["metadata"]["labels"], json!({"a": "1"}));
    }
}
