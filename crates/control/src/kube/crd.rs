//! The Istio kinds as CustomResourceDefinitions (`apiextensions.k8s.io/v1`), as a cluster
//! with Istio installed lists them: one per kind, every served version with its schema
//! (generated from the types that load it), the names kubectl knows it by, and conversion
//! `None` (the versions of a kind share one schema, so an object is served at any of them
//! unchanged but for its `apiVersion`). They are built in, so they are read-only.

use std::sync::OnceLock;

use serde_json::{json, Value};
use tessera_model::resource::{KindInfo, KINDS};
use tessera_model::schema;

pub const GROUP: &str = "apiextensions.k8s.io";
pub const VERSION: &str = "v1";
pub const PLURAL: &str = "customresourcedefinitions";
pub const KIND: &str = "CustomResourceDefinition";

/// The kinds that are custom resources in a cluster: Istio's.
fn custom_kinds() -> impl Iterator<Item = &'static KindInfo> {
    KINDS.iter().filter(|k| k.group.ends_with(".istio.io"))
}

/// The entry of the resource list of `apiextensions.k8s.io/v1`.
pub fn api_resource() -> Value {
    json!({
        "name": PLURAL,
        "singularName": "customresourcedefinition",
        "namespaced": false,
        "kind": KIND,
        "verbs": ["get", "list"],
        "shortNames": ["crd", "crds"],
        "categories": ["api-extensions"],
    })
}

/// The structural schema of each custom kind, made once (it changes only with the binary).
fn structural(kind: tessera_model::Kind) -> &'static Value {
    static SCHEMAS: OnceLock<Vec<(tessera_model::Kind, Value)>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        custom_kinds()
            .map(|k| (k.kind, schema::structural(k.kind)))
            .collect()
    });
    &all.iter()
        .find(|(k, _)| *k == kind)
        .expect("every custom kind has a schema")
        .1
}

/// The definition of one kind. `created` is when the mesh was made (its definitions
/// come with it), `revision` the store's.
fn definition(info: &KindInfo, created: Option<&str>, revision: u64) -> Value {
    let name = format!("{}.{}", info.plural, info.group);
    let structural = structural(info.kind);
    let names = json!({
        "plural": info.plural,
        "singular": info.name.to_ascii_lowercase(),
        "kind": info.name,
        "listKind": format!("{}List", info.name),
        "shortNames": info.short_names,
        "categories": info.categories(),
    });
    let versions: Vec<Value> = info
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "name": v,
                "served": true,
                "storage": i == 0,
                "schema": {"openAPIV3Schema": structural},
                "subresources": {"status": {}},
            })
        })
        .collect();
    let established = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "reason": reason, "message": message, "lastTransitionTime": created});
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {
            "name": name,
            "uid": crate::objects::uid_from(&format!("{KIND}/{name}")),
            "resourceVersion": revision.to_string(),
            "generation": 1,
            "creationTimestamp": created,
            "labels": {"app.kubernetes.io/part-of": "tessera"},
        },
        "spec": {
            "group": info.group,
            "names": names,
            "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
            "versions": versions,
            "conversion": {"strategy": "None"},
        },
        "status": {
            "acceptedNames": names,
            "storedVersions": [info.versions[0]],
            "conditions": [
                established("NamesAccepted", "NoConflicts", "no conflicts found"),
                established("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
        },
    })
}

/// Every definition, or the one named `name` (`peerauthentications.security.istio.io`).
pub fn definitions(name: Option<&str>, created: Option<&str>, revision: u64) -> Vec<Value> {
    custom_kinds()
        .filter(|k| name.is_none_or(|n| n == format!("{}.{}", k.plural, k.group)))
        .map(|k| definition(k, created, revision))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_definition_per_istio_kind_with_every_served_version() {
        let all = definitions(None, Some("2026-01-01T00:00:00Z"), 3);
        let names: Vec<&str> = all
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"peerauthentications.security.istio.io"));
        assert!(names.contains(&"policies.authentication.istio.io"));
        assert!(!names.iter().any(|n| n.starts_with("pods")));
        let vs = &definitions(Some("virtualservices.networking.istio.io"), None, 3)[0];
        let versions: Vec<(&str, bool)> = vs["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v["storage"].as_bool().unwrap()))
            .collect();
        assert_eq!(
            versions,
            [("v1", true), ("v1beta1", false), ("v1alpha3", false)]
        );
        assert_eq!(vs["spec"]["names"]["shortNames"], json!(["vs"]));
        assert_eq!(vs["spec"]["scope"], "Namespaced");
        let hosts = &vs["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["hosts"];
        assert_eq!(hosts["type"], "array", "{hosts}");
        let mesh = &definitions(Some("meshpolicies.authentication.istio.io"), None, 3)[0];
        assert_eq!(mesh["spec"]["scope"], "Cluster");
        assert!(definitions(Some("nope.istio.io"), None, 3).is_empty());
    }
}
