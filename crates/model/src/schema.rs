//! The schemas of the model's kinds, generated from the same types that load them, so a
//! published schema (OpenAPI documents, CustomResourceDefinitions) cannot disagree with
//! what `tessera validate` and the API accept.

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{Map, Value};

use crate::istio::{
    AuthorizationPolicy, DestinationRule, Gateway, MeshPolicy, PeerAuthentication, Policy, Sidecar,
    VirtualService,
};
use crate::kube::{
    ConfigMap, Deployment, Namespace, Pod, ReplicationController, Secret, Service, ServiceAccount,
};
use crate::resource::Kind;

/// The schema of `kind`'s type from `generator`: a reference into its definitions, or
/// (`root`) the whole schema with the generator's transforms applied.
fn kind_schema(kind: Kind, generator: &mut SchemaGenerator, root: bool) -> Value {
    macro_rules! of {
        ($t:ty) => {
            if root {
                generator.root_schema_for::<$t>()
            } else {
                generator.subschema_for::<$t>()
            }
            .to_value()
        };
    }
    match kind {
        Kind::Namespace => of!(Namespace),
        Kind::ServiceAccount => of!(ServiceAccount),
        Kind::Secret => of!(Secret),
        Kind::ConfigMap => of!(ConfigMap),
        Kind::Service => of!(Service),
        Kind::Deployment => of!(Deployment),
        Kind::ReplicationController => of!(ReplicationController),
        Kind::Pod => of!(Pod),
        Kind::PeerAuthentication => of!(PeerAuthentication),
        Kind::AuthorizationPolicy => of!(AuthorizationPolicy),
        Kind::Policy => of!(Policy),
        Kind::MeshPolicy => of!(MeshPolicy),
        Kind::DestinationRule => of!(DestinationRule),
        Kind::Sidecar => of!(Sidecar),
        Kind::Gateway => of!(Gateway),
        Kind::VirtualService => of!(VirtualService),
    }
}

/// OpenAPI v3 component schemas for `kinds`: every type they use, by name, and the name of
/// each kind's own schema (in the order of `kinds`).
pub fn openapi_components(kinds: &[Kind]) -> (Map<String, Value>, Vec<String>) {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let names = kinds
        .iter()
        .map(|k| {
            let reference = kind_schema(*k, &mut generator, false);
            reference["$ref"]
                .as_str()
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or(k.name())
                .to_string()
        })
        .collect();
    let mut definitions = generator.take_definitions(true);
    for schema in definitions.values_mut() {
        kubernetes_style(schema);
    }
    // Enums and other scalars are written in place, as Kubernetes' documents write them,
    // so that a field shows its allowed values (`kubectl explain` lists an ENUM).
    let scalars: Map<String, Value> = definitions
        .iter()
        .filter(|(_, d)| d.get("type").is_some_and(|t| t != "object" && t != "array"))
        .map(|(n, d)| (n.clone(), d.clone()))
        .collect();
    for schema in definitions.values_mut() {
        inline_scalars(schema, &scalars);
    }
    (definitions, names)
}

/// Replaces each `allOf: [$ref]` to one of `scalars` with the scalar's schema, keeping the
/// field's own description.
fn inline_scalars(schema: &mut Value, scalars: &Map<String, Value>) {
    match schema {
        Value::Object(o) => {
            let target = match o.get("allOf") {
                Some(Value::Array(refs)) if refs.len() == 1 => refs[0]["$ref"]
                    .as_str()
                    .and_then(|r| r.rsplit('/').next())
                    .and_then(|name| scalars.get(name))
                    .cloned(),
                _ => None,
            };
            if let Some(Value::Object(scalar)) = target {
                o.remove("allOf");
                for (k, v) in scalar {
                    o.entry(k).or_insert(v);
                }
            }
            for v in o.values_mut() {
                inline_scalars(v, scalars);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| inline_scalars(v, scalars)),
        _ => {}
    }
}

/// `kind`'s schema with every type written in place, as a CustomResourceDefinition's
/// `openAPIV3Schema` must be; free-form values keep their unknown fields.
pub fn structural(kind: Kind) -> Value {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = kind_schema(kind, &mut generator, true);
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    kubernetes_style(&mut schema);
    schema
}

/// Rewrites a generated schema in the shapes Kubernetes' own documents use, which kubectl
/// and CRD validation understand: an optional value is `nullable` (not `anyOf` with
/// null), a map is `additionalProperties`, and a free-form value keeps unknown fields.
fn kubernetes_style(schema: &mut Value) {
    let Some(o) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(variants)) = o.get("anyOf") {
        let non_null: Vec<&Value> = variants.iter().filter(|v| !is_null_schema(v)).collect();
        if let [only] = non_null[..] {
            let only = only.clone();
            o.remove("anyOf");
            o.insert("nullable".into(), true.into());
            if only.get("$ref").is_some() {
                o.insert("allOf".into(), Value::Array(vec![only]));
            } else if let Value::Object(fields) = only {
                for (k, v) in fields {
                    o.entry(k).or_insert(v);
                }
            }
        }
    }
    // `type: [T, "null"]` is a nullable T.
    if let Some(Value::Array(types)) = o.get("type") {
        let non_null: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if let [only] = &non_null[..] {
            let only = only.clone();
            o.insert("type".into(), only);
            o.insert("nullable".into(), true.into());
        }
    }
    if o.get("additionalProperties") == Some(&Value::Bool(false)) {
        if let Some(Value::Object(patterns)) = o.get("patternProperties") {
            if let Some(values) = patterns.values().next().cloned() {
                o.remove("patternProperties");
                o.insert("additionalProperties".into(), values);
            }
        }
    }
    let free = o
        .keys()
        .all(|k| matches!(k.as_str(), "description" | "nullable" | "default"));
    if free {
        o.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
        return;
    }
    for (key, child) in o.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" => {
                for v in child
                    .as_object_mut()
                    .into_iter()
                    .flat_map(|m| m.values_mut())
                {
                    kubernetes_style(v);
                }
            }
            "items" | "additionalProperties" => kubernetes_style(child),
            "anyOf" | "oneOf" | "allOf" => {
                for v in child.as_array_mut().into_iter().flatten() {
                    kubernetes_style(v);
                }
            }
            _ => {}
        }
    }
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type") == Some(&Value::String("null".into()))
        || v.get("enum") == Some(&Value::Array(vec![Value::Null]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_name_each_kind_and_the_types_it_uses() {
        let (defs, names) = openapi_components(&[Kind::Pod, Kind::PeerAuthentication]);
        assert_eq!(names, ["Pod", "PeerAuthentication"]);
        let pod = &defs["Pod"];
        assert_eq!(pod["type"], "object");
        for field in ["apiVersion", "kind", "metadata", "spec", "status"] {
            assert!(pod["properties"][field].is_object(), "Pod.{field}");
        }
        // Containers are found through references to the types that load them.
        let spec_ref = serde_json::to_string(&pod["properties"]["spec"]).unwrap();
        assert!(
            spec_ref.contains("#/components/schemas/PodSpec"),
            "{spec_ref}"
        );
        assert!(defs["PodSpec"]["properties"]["containers"]["items"].is_object());
        // Enum values are Istio's.
        let mode = serde_json::to_string(&defs).unwrap();
        assert!(mode.contains("\"STRICT\"") && mode.contains("\"PERMISSIVE\""));
    }

    #[test]
    fn structural_schemas_have_no_references() {
        for kind in [
            Kind::PeerAuthentication,
            Kind::VirtualService,
            Kind::DestinationRule,
        ] {
            let s = structural(kind);
            let text = s.to_string();
            assert!(!text.contains("$ref"), "{kind}: {text}");
            assert!(!text.contains("\"null\""), "{kind}: {text}");
            assert_eq!(s["type"], "object");
            assert!(s["properties"]["spec"]["properties"].is_object(), "{kind}");
        }
    }

    #[test]
    fn fields_kubernetes_spells_with_capitals_load_and_are_published() {
        // Istio's injected pods carry a downwardAPI volume; a port may name its hostIP.
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: i\n    ports: [{containerPort: 80, hostIP: 127.0.0.1}]\n  volumes:\n  - name: podinfo\n    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}\n";
        let report = crate::load_str(
            std::path::Path::new("pod.yaml"),
            pod,
            &crate::LoadOptions::default(),
        );
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let yaml = report.documents[0].resource.to_yaml();
        assert!(
            yaml.contains("hostIP:") && yaml.contains("downwardAPI:"),
            "{yaml}"
        );
        let (defs, _) = openapi_components(&[Kind::Pod]);
        assert!(defs["ContainerPort"]["properties"]["hostIP"].is_object());
        assert!(defs["Volume"]["properties"]["downwardAPI"].is_object());
    }
}
