//! The patches of the Kubernetes API, as pure functions on JSON: JSON merge patch
//! (RFC 7386), strategic merge patch (lists with a merge key merge by element, with
//! kubectl's directives) and JSON patch (RFC 6902).

use serde_json::Value;

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
pub fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
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

/// The JSON patch (RFC 6902) that turns `from` into `to`: objects are compared key by key,
/// arrays element by element when their lengths agree, elements appended to an array are
/// added at its end (`/-`, so what the patch does not name stays as the server has it),
/// and anything else that differs is replaced whole.
pub fn diff(from: &Value, to: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    diff_at("", from, to, &mut ops);
    ops
}

fn diff_at(path: &str, from: &Value, to: &Value, ops: &mut Vec<Value>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let at = format!("{path}/{}", escape(k));
                match b.get(k) {
                    None => ops.push(serde_json::json!({"op": "remove", "path": at})),
                    Some(w) => diff_at(&at, v, w, ops),
                }
            }
            for (k, w) in b {
                if !a.contains_key(k) {
                    let at = format!("{path}/{}", escape(k));
                    ops.push(serde_json::json!({"op": "add", "path": at, "value": w}));
                }
            }
        }
        (a, b) if a == b => {}
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                diff_at(&format!("{path}/{i}"), v, w, ops);
            }
        }
        (Value::Array(a), Value::Array(b)) if b.len() > a.len() && b[..a.len()] == a[..] => {
            for w in &b[a.len()..] {
                ops.push(serde_json::json!({"op": "add", "path": format!("{path}/-"), "value": w}));
            }
        }
        (_, b) => ops.push(serde_json::json!({"op": "replace", "path": path, "value": b})),
    }
}

/// A key as a JSON pointer token.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
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
    fn a_diff_applied_gives_the_target() {
        let cases = [
            (json!({"a": 1}), json!({"a": 2})),
            (
                json!({"a": 1, "b": {"c": [1, 2]}}),
                json!({"b": {"c": [1, 2, 3], "d": "x"}}),
            ),
            (json!({"x/y": {"~z": 1}}), json!({"x/y": {"~z": 2}})),
            (
                json!({"spec": {"containers": [{"name": "app"}]}}),
                json!({"spec": {"containers": [{"name": "app"}, {"name": "istio-proxy"}]}}),
            ),
            (json!({}), json!({"a": null})),
            (json!({"a": {"b": 1}}), json!({"a": "flat"})),
            (
                json!({"l": [{"n": 1}, {"n": 2}]}),
                json!({"l": [{"n": 1}, {"n": 3}]}),
            ),
            (json!({"l": [1, 2, 3]}), json!({"l": [3]})),
        ];
        for (from, to) in cases {
            let ops = Value::Array(diff(&from, &to));
            let mut patched = from.clone();
            json_patch(&mut patched, &ops).unwrap_or_else(|e| panic!("{ops}: {e}"));
            assert_eq!(patched, to, "{ops}");
        }
        assert!(diff(&json!({"a": [1]}), &json!({"a": [1]})).is_empty());
        // Appended containers are added at the end; the others are not touched.
        let added = diff(
            &json!({"c": [{"name": "app", "x": 1}]}),
            &json!({"c": [{"name": "app", "x": 1}, {"name": "istio-proxy"}]}),
        );
        assert_eq!(
            added,
            [json!({"op": "add", "path": "/c/-", "value": {"name": "istio-proxy"}})]
        );
    }
}
