//! OpenAPI v3 documents, generated from the model's kinds: one per group version, each
//! path with its operations and their `x-kubernetes-group-version-kind`. The PATCH
//! operations list the `fieldValidation` parameter, which is how `kubectl` learns that the
//! server validates (strictly, with the same validation as `tessera validate`), so it does
//! not need schemas of its own to validate a manifest before sending it.

use serde_json::{json, Map, Value};
use tessera_model::resource::{api_version, KindInfo, KINDS};

/// The documents change only with the binary.
const HASH: &str = concat!("tessera-", env!("CARGO_PKG_VERSION"));

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
    let paths: Map<String, Value> = group_versions()
        .into_iter()
        .map(|(g, v)| {
            let k = key(g, v);
            let url = format!("/openapi/v3/{k}?hash={HASH}");
            (k, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({ "paths": paths })
}

fn parameter(name: &str, place: &str) -> Value {
    json!({"name": name, "in": place, "schema": {"type": "string"}, "required": place == "path"})
}

fn operation(info: &KindInfo, version: &str, action: &str, query: &[&str]) -> Value {
    let mut params: Vec<Value> = query.iter().map(|q| parameter(q, "query")).collect();
    params.push(parameter("pretty", "query"));
    json!({
        "operationId": format!("{action}{}", info.name),
        "parameters": params,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": info.group, "version": version, "kind": info.name},
    })
}

fn write_params() -> &'static [&'static str] {
    &["dryRun", "fieldManager", "fieldValidation"]
}

/// `/openapi/v3/{api/v1 | apis/{group}/{version}}`, or `None` for a group version the
/// model does not serve.
pub fn document(path: &str) -> Option<Value> {
    let (group, version) = group_versions()
        .into_iter()
        .find(|(g, v)| key(g, v) == path)?;
    let prefix = format!("/{}", key(group, version));
    let mut paths = Map::new();
    for info in KINDS
        .iter()
        .filter(|k| k.group == group && k.versions.contains(&version))
    {
        let scope = if info.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", info.plural)
        } else {
            format!("{prefix}/{}", info.plural)
        };
        paths.insert(
            scope.clone(),
            json!({
                "get": operation(info, version, "list", &["labelSelector", "fieldSelector", "limit", "watch"]),
                "post": operation(info, version, "post", write_params()),
            }),
        );
        paths.insert(
            format!("{scope}/{{name}}"),
            json!({
                "get": operation(info, version, "get", &[]),
                "put": operation(info, version, "put", write_params()),
                "patch": operation(info, version, "patch", write_params()),
                "delete": operation(info, version, "delete", &["dryRun"]),
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", super::discovery::MAJOR, super::discovery::MINOR)},
        "paths": paths,
        "components": {"schemas": {}},
        "x-tessera-group-version": api_version(group, version),
    }))
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
    }
}
