//! OpenAPI v3 documents, generated from the model's kinds: one per group version, each
//! path with its operations and their `x-kubernetes-group-version-kind`, and the schemas
//! of the kinds generated from the types that load them (`kubectl explain` reads them).
//! The PATCH operations list the `fieldValidation` parameter, which is how `kubectl`
//! learns that the server validates (strictly, with the same validation as `tessera
//! validate`), so it does not validate a manifest itself before sending it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tessera_model::resource::{api_version, Kind, KindInfo, KINDS};
use tessera_model::schema;

/// Every group version's document, made once (they change only with the binary), with
/// the hash of its content that the index names so that clients' caches follow it.
fn documents() -> &'static BTreeMap<String, (Value, String)> {
    static DOCUMENTS: OnceLock<BTreeMap<String, (Value, String)>> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        group_versions()
            .into_iter()
            .map(|(g, v)| {
                let doc = make_document(g, v);
                let hash: String = Sha256::digest(doc.to_string().as_bytes())
                    .iter()
                    .take(16)
                    .map(|b| format!("{b:02X}"))
                    .collect();
                (key(g, v), (doc, hash))
            })
            .collect()
    })
}

/// `api/v1`, `apis/security.istio.io/v1`: a group version's key in the index.
fn key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        for v in k.versions {
            if !out.contains(&(k.group, v)) {
                out.push((k.group, v));
            }
        }
    }
    out
}

/// `/openapi/v3`: where each group version's document is.
pub fn index() -> Value {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|(k, (_, hash))| {
            let url = format!("/openapi/v3/{k}?hash={hash}");
            (k.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({ "paths": paths })
}

fn parameter(name: &str, place: &str) -> Value {
    json!({"name": name, "in": place, "schema": {"type": "string"}, "required": place == "path"})
}

fn operation(info: &KindInfo, version: &str, action: &str, query: &[&str], schema: &str) -> Value {
    let mut params: Vec<Value> = query.iter().map(|q| parameter(q, "query")).collect();
    params.push(parameter("pretty", "query"));
    let reference = json!({"$ref": format!("#/components/schemas/{schema}")});
    let body = if action == "list" {
        json!({"type": "object", "properties": {"items": {"type": "array", "items": reference}}})
    } else {
        reference
    };
    json!({
        "operationId": format!("{action}{}", info.name),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": body}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": info.group, "version": version, "kind": info.name},
    })
}

/// The fields every object has, described as the API server describes them.
fn describe_top_level(schema: &mut Map<String, Value>) {
    const FIELDS: &[(&str, &str)] = &[
        ("apiVersion", "The versioned schema of this representation of an object: group/version, or the version alone for the core group."),
        ("kind", "The kind of object, in CamelCase."),
        ("metadata", "The object's name, namespace, labels, annotations and the fields the server keeps (uid, resourceVersion, generation, creationTimestamp)."),
        ("spec", "What the object asks for."),
        ("status", "What the mesh last observed, written by the server."),
    ];
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, text) in FIELDS {
        if let Some(p) = props.get_mut(*field).and_then(Value::as_object_mut) {
            p.entry("description").or_insert_with(|| (*text).into());
        }
    }
}

fn write_params() -> &'static [&'static str] {
    &["dryRun", "fieldManager", "fieldValidation"]
}

/// `/openapi/v3/{api/v1 | apis/{group}/{version}}`, or `None` for a group version the
/// model does not serve.
pub fn document(path: &str) -> Option<&'static Value> {
    documents().get(path).map(|(doc, _)| doc)
}

fn make_document(group: &str, version: &str) -> Value {
    let prefix = format!("/{}", key(group, version));
    let mut paths = Map::new();
    let infos: Vec<&KindInfo> = KINDS
        .iter()
        .filter(|k| k.group == group && k.versions.contains(&version))
        .collect();
    let kinds: Vec<Kind> = infos.iter().map(|i| i.kind).collect();
    let (mut schemas, names) = schema::openapi_components(&kinds);
    for (info, name) in infos.iter().zip(&names) {
        if let Some(s) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": info.group, "version": version, "kind": info.name}]),
            );
            s.insert("description".into(), info.summary.into());
            describe_top_level(s);
        }
    }
    for (info, name) in infos.into_iter().zip(&names) {
        let scope = if info.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", info.plural)
        } else {
            format!("{prefix}/{}", info.plural)
        };
        paths.insert(
            scope.clone(),
            json!({
                "get": operation(info, version, "list", &["labelSelector", "fieldSelector", "limit", "watch"], name),
                "post": operation(info, version, "post", write_params(), name),
                "delete": operation(info, version, "deletecollection", &["labelSelector", "fieldSelector", "dryRun"], name),
            }),
        );
        paths.insert(
            format!("{scope}/{{name}}"),
            json!({
                "get": operation(info, version, "get", &[], name),
                "put": operation(info, version, "put", write_params(), name),
                "patch": operation(info, version, "patch", write_params(), name),
                "delete": operation(info, version, "delete", &["dryRun"], name),
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", super::discovery::MAJOR, super::discovery::MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
        "x-tessera-group-version": api_version(group, version),
    })
}

/// `/openapi/v2`: one Swagger 2.0 document with every kind's schema, each naming all the
/// group versions it is served at, for the clients that read v2 (kubectl reads v3).
pub fn v2() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let kinds: Vec<Kind> = KINDS.iter().map(|k| k.kind).collect();
        let (schemas, names) = schema::openapi_components(&kinds);
        let mut definitions = Value::Object(schemas);
        rewrite_refs(&mut definitions);
        for (info, name) in KINDS.iter().zip(&names) {
            if let Some(d) = definitions.get_mut(name).and_then(Value::as_object_mut) {
                let gvks: Vec<Value> = info
                    .versions
                    .iter()
                    .map(|v| json!({"group": info.group, "version": v, "kind": info.name}))
                    .collect();
                d.insert("x-kubernetes-group-version-kind".into(), gvks.into());
                d.insert("description".into(), info.summary.into());
                describe_top_level(d);
            }
        }
        json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", super::discovery::MAJOR, super::discovery::MINOR)},
            "paths": {},
            "definitions": definitions,
        })
    })
}

/// OpenAPI 3 references (`#/components/schemas/X`) as Swagger 2's (`#/definitions/X`).
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    *r = format!("#/definitions/{name}");
                }
            }
            o.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_a_document_with_patch_field_validation() {
        let index = index();
        let paths = index["paths"].as_object().unwrap();
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/networking.istio.io/v1alpha3"));
        for k in paths.keys() {
            let doc = document(k).unwrap_or_else(|| panic!("{k}"));
            let patched = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|p| p.get("patch"))
                .count();
            assert!(patched > 0, "{k}");
        }
        let core = document("api/v1").unwrap();
        let pod = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(pod["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(pod["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
        assert!(core["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
        assert!(document("apis/batch/v1").is_none());
        // The kinds' schemas, found by their group-version-kind as kubectl looks them up.
        let gvk = &core["components"]["schemas"]["Pod"]["x-kubernetes-group-version-kind"];
        assert_eq!(gvk, &json!([{"group": "", "version": "v1", "kind": "Pod"}]));
        let pa = document("apis/security.istio.io/v1beta1").unwrap();
        let pa = &pa["components"]["schemas"]["PeerAuthentication"];
        assert_eq!(
            pa["x-kubernetes-group-version-kind"][0]["version"],
            "v1beta1"
        );
        assert!(pa["description"].as_str().unwrap().contains("mutual TLS"));
        // The index names each document by a hash of its content.
        let url = paths["api/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(
            url.starts_with("/openapi/v3/api/v1?hash=") && url.len() > 40,
            "{url}"
        );
    }
}
