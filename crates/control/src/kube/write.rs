//! Writes through the Kubernetes API: create (POST), replace (PUT), JSON merge patch and
//! JSON patch (PATCH), delete. Each one reads the object with the loader and validation of
//! `tessera apply` and changes the store with the same operations, so that nothing is
//! half-applied and the errors are the ones `tessera validate` gives.

use std::path::Path;

use serde_json::Value;
use tessera_model::resource::{Kind, ObjectKey, Resource};

use super::answer;
use super::path::ObjectPath;
use super::watch::Selection;
use crate::api::routes::load_options;
use crate::objects::Op;
use crate::state::ControlState;

/// A write's answer: the status code and body.
pub type Answer = (u16, Value);

/// The API server's reason and code for an error the store gave
/// (`Error from server (AlreadyExists): ...`).
pub fn store_error(errors: &[String]) -> Answer {
    let first = errors
        .first()
        .map(String::as_str)
        .unwrap_or("the change was refused");
    let (reason, message) = first
        .strip_prefix("Error from server (")
        .and_then(|rest| rest.split_once("): "))
        .unwrap_or(("Invalid", first));
    let code = match reason {
        "NotFound" => 404,
        "AlreadyExists" | "Conflict" => 409,
        "BadRequest" => 400,
        "Forbidden" => 403,
        _ => 422,
    };
    // The store names where an object came from; here that is the request itself.
    let message = if errors.len() > 1 {
        errors.join("; ")
    } else {
        message.to_string()
    };
    let message = message
        .strip_prefix("error when creating \"request body\": ")
        .unwrap_or(&message)
        .to_string();
    let reason = if code == 422 { "Invalid" } else { reason };
    (code, answer::status(code, reason, &message, None))
}

fn bad_request(message: &str) -> Answer {
    (400, answer::status(400, "BadRequest", message, None))
}

/// Reads one object of the path's kind from a request body (JSON or YAML) with the
/// loader's validation; the namespace comes from the path.
fn read_object(control: &ControlState, o: &ObjectPath, body: &[u8]) -> Result<Resource, Answer> {
    let text = std::str::from_utf8(body).map_err(|_| bad_request("the body is not UTF-8"))?;
    let opts = load_options(control, o.namespace.clone());
    let report = tessera_model::load_str(Path::new("request body"), text, &opts);
    let errors: Vec<&tessera_model::Problem> =
        report.problems.iter().filter(|p| p.is_error()).collect();
    if !errors.is_empty() {
        return Err(invalid(o, text, &errors));
    }
    let mut docs = report.documents.into_iter();
    let (Some(doc), None) = (docs.next(), docs.next()) else {
        return Err(bad_request("the body must hold exactly one object"));
    };
    if doc.resource.kind() != o.info.kind {
        return Err(bad_request(&format!(
            "the body is a {}, the path names {}",
            doc.resource.kind(),
            answer::resource_name(o.info)
        )));
    }
    if let Some(name) = &o.name {
        if doc.resource.name() != name {
            return Err(bad_request(&format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                doc.resource.name()
            )));
        }
    }
    Ok(doc.resource)
}

/// 422 Invalid as the API server words it, which kubectl prints as
/// `The Kind "name" is invalid: field: message`: the kind and name of the object (as far
/// as the body says), and one cause per problem, with its field path.
fn invalid(o: &ObjectPath, body: &str, problems: &[&tessera_model::Problem]) -> Answer {
    let name = serde_norway::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    let causes: Vec<Value> = problems
        .iter()
        .map(|p| {
            // kubectl sends JSON on one line: the field path says where, not the line.
            let mut message = p.message.clone();
            if let Some(hint) = &p.hint {
                message.push_str(&format!("; {hint}"));
            }
            serde_json::json!({"reason": "FieldValueInvalid", "message": message, "field": p.path.to_string()})
        })
        .collect();
    let listed: Vec<String> = causes
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c["field"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    let message = format!(
        "{} \"{name}\" is invalid: {}",
        o.info.name,
        listed.join(", ")
    );
    let details = serde_json::json!({"name": name, "group": o.info.group, "kind": o.info.name, "causes": causes});
    (422, answer::status(422, "Invalid", &message, Some(details)))
}

fn key_of(o: &ObjectPath, name: &str) -> ObjectKey {
    ObjectKey::new(o.info.kind, o.namespace.as_deref().unwrap_or(""), name)
}

/// The stored object at the path's version, as GET returns it.
pub fn stored_json(control: &ControlState, o: &ObjectPath, key: &ObjectKey) -> Option<Value> {
    control
        .objects()
        .get(key)
        .map(|s| answer::served(o.info, &o.version, s))
}

fn dry_run(query: Option<&str>) -> bool {
    tessera_contract::urlencoded::parse(query.unwrap_or(""))
        .get("dryRun")
        .is_some_and(|v| v.iter().any(|d| d == "All"))
}

/// Writes `resource` (a create, or a create-or-update) unless this is a dry run; `code`
/// and the object as stored, or the store's refusal.
async fn commit(
    control: &ControlState,
    o: &ObjectPath,
    resource: Resource,
    create: bool,
    query: Option<&str>,
    code: u16,
) -> Answer {
    if dry_run(query) {
        return (
            code,
            answer::at_version(o.info, &o.version, resource.to_json()),
        );
    }
    let key = ObjectKey::of(&resource);
    let origin = "request body".to_string();
    let op = if create {
        Op::Create { origin, resource }
    } else {
        Op::Apply { origin, resource }
    };
    match control.submit(vec![op]).await {
        Ok(_) => match stored_json(control, o, &key) {
            Some(v) => (code, v),
            // Deleted again before it could be read back.
            None => (404, answer::not_found(o.info, &key.name)),
        },
        Err(errors) => store_error(&errors),
    }
}

/// POST to a collection: 201 and the object, 409 if it exists.
pub async fn create(
    control: &ControlState,
    o: &ObjectPath,
    body: &[u8],
    query: Option<&str>,
) -> Answer {
    match read_object(control, o, body) {
        Ok(resource) => commit(control, o, resource, true, query, 201).await,
        Err(a) => a,
    }
}

/// PUT of a whole object: 200 and the object; 404 if it does not exist, 409 if the
/// body's `resourceVersion` is not the stored one.
pub async fn replace(
    control: &ControlState,
    o: &ObjectPath,
    body: &[u8],
    query: Option<&str>,
) -> Answer {
    let Some(name) = &o.name else {
        return (
            405,
            answer::status(405, "MethodNotAllowed", "PUT needs an object's name", None),
        );
    };
    let key = key_of(o, name);
    let Some(current) = control.objects().get(&key).map(|s| s.resource_version) else {
        return (404, answer::not_found(o.info, name));
    };
    let resource = match read_object(control, o, body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    if let Some(rv) = &resource.metadata().resource_version {
        if rv != &current.to_string() {
            let message = format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                answer::resource_name(o.info)
            );
            return (409, answer::status(409, "Conflict", &message, None));
        }
    }
    commit(control, o, resource, false, query, 200).await
}

/// PATCH: a JSON merge patch (RFC 7386) or a JSON patch (RFC 6902) on the stored object,
/// then the result is written as a PUT would write it.
pub async fn patch(
    control: &ControlState,
    o: &ObjectPath,
    content_type: &str,
    body: &[u8],
    query: Option<&str>,
) -> Answer {
    let Some(name) = &o.name else {
        return (
            405,
            answer::status(
                405,
                "MethodNotAllowed",
                "PATCH needs an object's name",
                None,
            ),
        );
    };
    let key = key_of(o, name);
    let media = content_type.split(';').next().unwrap_or("").trim();
    let server_side_apply = media == "application/apply-patch+yaml";
    let current = stored_json(control, o, &key);
    // Server-side apply creates what does not exist yet.
    if server_side_apply && current.is_none() {
        return create(control, o, body, query).await;
    }
    let Some(mut current) = current else {
        return (404, answer::not_found(o.info, name));
    };
    let patch = if server_side_apply {
        std::str::from_utf8(body)
            .ok()
            .and_then(|t| serde_norway::from_str::<Value>(t).ok())
    } else {
        serde_json::from_slice::<Value>(body).ok()
    };
    let Some(patch) = patch else {
        return bad_request("the patch is not JSON (or YAML, for server-side apply)");
    };
    match media {
        // The applied configuration merged over the object: what it names is set, the
        // rest is kept. Field ownership is not tracked, so no conflicts are reported and
        // a field a manager stops naming is not removed.
        "application/apply-patch+yaml" => merge_patch(&mut current, &patch),
        "application/merge-patch+json" => merge_patch(&mut current, &patch),
        "application/strategic-merge-patch+json" => strategic_merge_patch(&mut current, &patch),
        "application/json-patch+json" => {
            if let Err(e) = json_patch(&mut current, &patch) {
                return (422, answer::status(422, "Invalid", &e, None));
            }
        }
        other => {
            return (
                415,
                answer::status(
                    415,
                    "UnsupportedMediaType",
                    &format!("the patch type {other:?} is not supported; use application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json or application/apply-patch+yaml"),
                    None,
                ),
            )
        }
    }
    // The patched object is written whole; what the store owns is not the client's.
    if let Some(meta) = current["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    let body = serde_json::to_vec(&current).unwrap_or_default();
    replace(control, o, &body, query).await
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The key that identifies an element of a list field in a strategic merge patch, as the
/// Kubernetes types declare it (`patchMergeKey`); lists without one are replaced whole.
fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "conditions" => "type",
        // Container ports by number, Service ports by port.
        "ports" if elements.iter().any(|e| e.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

/// A strategic merge patch as the API server applies it to the built-in kinds: a merge
/// patch whose lists with a merge key merge element by element (`$patch: delete` removes
/// one), with the directives kubectl sends (`$setElementOrder/...` only orders,
/// `$deleteFromPrimitiveList/...` removes values, `$retainKeys` drops the keys it does not
/// list, `$patch: replace` replaces the object).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = p.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("an object");
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(gone)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(elements) => {
                let key = merge_key(k, elements);
                match (key, t.get_mut(k)) {
                    (Some(key), Some(Value::Array(current))) => merge_list(current, elements, key),
                    _ => {
                        let kept: Vec<Value> = elements
                            .iter()
                            .filter(|e| e.get("$patch").is_none())
                            .cloned()
                            .collect();
                        t.insert(k.clone(), Value::Array(kept));
                    }
                }
            }
            Value::Object(_) => strategic_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
}

fn merge_list(current: &mut Vec<Value>, patch: &[Value], key: &str) {
    for element in patch {
        let id = element.get(key).cloned();
        let at = id
            .as_ref()
            .and_then(|id| current.iter().position(|c| c.get(key) == Some(id)));
        if element.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = at {
                current.remove(i);
            }
            continue;
        }
        match at {
            Some(i) => strategic_merge_patch(&mut current[i], element),
            None => current.push(element.clone()),
        }
    }
}

/// RFC 6902 operations: add, remove, replace, move, copy, test.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch is an array of operations")?;
    let mut work = target.clone();
    for op in ops {
        let kind = op["op"].as_str().ok_or("an operation needs \"op\"")?;
        let path = op["path"].as_str().ok_or("an operation needs \"path\"")?;
        match kind {
            "add" => add(&mut work, path, op["value"].clone())?,
            "remove" => {
                remove(&mut work, path)?;
            }
            "replace" => {
                remove(&mut work, path)?;
                add(&mut work, path, op["value"].clone())?;
            }
            "move" | "copy" => {
                let from = op["from"].as_str().ok_or("move and copy need \"from\"")?;
                let value = if kind == "move" {
                    remove(&mut work, from)?
                } else {
                    work.pointer(from)
                        .cloned()
                        .ok_or(format!("{from}: no such path"))?
                };
                add(&mut work, path, value)?;
            }
            "test" => {
                if work.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test at {path} failed"));
                }
            }
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    *target = work;
    Ok(())
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let i = path
        .rfind('/')
        .ok_or(format!("{path}: not a JSON pointer"))?;
    let last = path[i + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..i], last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("{path}: not an index"))?
            };
            if i > a.len() {
                return Err(format!("{path}: index out of range"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("{path}: the parent does not exist")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or(format!("{path}: no such path")),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("{path}: not an index"))?;
            (i < a.len())
                .then(|| a.remove(i))
                .ok_or(format!("{path}: index out of range"))
        }
        _ => Err(format!("{path}: no such path")),
    }
}

/// DELETE of one object: 200 and the object as it was (a namespace goes with its objects).
pub async fn delete(control: &ControlState, o: &ObjectPath, query: Option<&str>) -> Answer {
    let Some(name) = &o.name else {
        let message = "a collection is deleted with its selectors";
        return (405, answer::status(405, "MethodNotAllowed", message, None));
    };
    let key = key_of(o, name);
    let Some(before) = stored_json(control, o, &key) else {
        return (404, answer::not_found(o.info, name));
    };
    if dry_run(query) {
        return (200, before);
    }
    let op = Op::Delete {
        key,
        ignore_not_found: false,
    };
    match control.submit(vec![op]).await {
        Ok(_) if o.info.kind == Kind::Namespace => {
            let mut ns = before;
            ns["status"]["phase"] = "Terminating".into();
            (200, ns)
        }
        Ok(_) => (200, before),
        Err(errors) => store_error(&errors),
    }
}

/// DELETE of a collection (deletecollection): every object the selectors pick, in one
/// change of the store (all or none), answered with the list of them as they were.
pub async fn delete_collection(
    control: &ControlState,
    selection: &Selection,
    query: Option<&str>,
) -> Answer {
    let o = &selection.object;
    let objects = control.objects();
    let (keys, items): (Vec<ObjectKey>, Vec<Value>) = selection
        .selected(&objects)
        .map(|(s, v)| (ObjectKey::of(&s.resource), v))
        .unzip();
    let list = answer::list(o.info, &o.version, items, objects.revision());
    if dry_run(query) || keys.is_empty() {
        return (200, list);
    }
    let ops = keys
        .into_iter()
        .map(|key| Op::Delete {
            key,
            ignore_not_found: true,
        })
        .collect();
    match control.submit(ops).await {
        Ok(_) => (200, list),
        Err(errors) => store_error(&errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "{patch}");
        }
    }

    #[test]
    fn strategic_merge_patch_merges_lists_by_key() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
            {"name": "istio-proxy", "image": "tessera"},
        ]}, "metadata": {"finalizers": ["x", "y"], "labels": {"a": "1"}}});
        strategic_merge_patch(
            &mut pod,
            &json!({
                "$setElementOrder/containers": [{"name": "app"}, {"name": "istio-proxy"}],
                "metadata": {"labels": {"a": null, "b": "2"}, "$deleteFromPrimitiveList/finalizers": ["x"]},
                "spec": {"containers": [
                    {"name": "app", "image": "a:2", "env": [{"name": "B", "value": "2"}]},
                    {"name": "istio-proxy", "$patch": "delete"},
                    {"name": "new", "image": "n"},
                ]},
            }),
        );
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "ports": [{"containerPort": 80}]},
                {"name": "new", "image": "n"},
            ]}, "metadata": {"finalizers": ["y"], "labels": {"b": "2"}}})
        );
        // A list without a merge key is replaced; `$patch: replace` replaces an object.
        let mut svc =
            json!({"spec": {"selector": {"app": "a", "v": "1"}, "externalIPs": ["1.1.1.1"]}});
        strategic_merge_patch(
            &mut svc,
            &json!({"spec": {"externalIPs": ["2.2.2.2"], "selector": {"$patch": "replace", "app": "b"}}}),
        );
        assert_eq!(
            svc,
            json!({"spec": {"selector": {"app": "b"}, "externalIPs": ["2.2.2.2"]}})
        );
        // Service ports merge by port.
        let mut svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}});
        strategic_merge_patch(
            &mut svc,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
        );
        assert_eq!(
            svc,
            json!({"spec": {"ports": [{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]}})
        );
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [1, 3]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/metadata/labels/a", "value": "x"},
                {"op": "add", "path": "/spec/ports/1", "value": 2},
                {"op": "add", "path": "/spec/ports/-", "value": 4},
                {"op": "test", "path": "/spec/ports/0", "value": 1},
                {"op": "copy", "from": "/metadata/labels/a", "path": "/metadata/labels/c"},
                {"op": "remove", "path": "/metadata/labels/b"},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"a": "x", "c": "x"}}, "spec": {"ports": [1, 2, 3, 4]}})
        );
        // A failed operation leaves the document as it was.
        let before = doc.clone();
        assert!(json_patch(
            &mut doc,
            &json!([{"op": "remove", "path": "/metadata/labels/a"}, {"op": "remove", "path": "/nope"}])
        )
        .is_err());
        assert_eq!(doc, before);
    }

    #[test]
    fn store_errors_keep_their_reason() {
        let (code, s) = store_error(&[
            "Error from server (AlreadyExists): namespaces \"x\" already exists".into(),
        ]);
        assert_eq!(code, 409);
        assert_eq!(s["reason"], "AlreadyExists");
        assert_eq!(s["message"], "namespaces \"x\" already exists");
        let (code, s) = store_error(&["Error from server (NotFound): pods \"p\" not found".into()]);
        assert_eq!((code, s["reason"].as_str()), (404, Some("NotFound")));
        let (code, s) = store_error(&["a.yaml:3: spec.mtls.mode: bad".into()]);
        assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")));
    }
}
