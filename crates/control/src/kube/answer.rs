//! The bodies the Kubernetes API answers with: objects at the version asked for, lists,
//! `meta.k8s.io/v1` Tables with kubectl's columns, and `Status` errors with kubectl's
//! reasons.

use serde_json::{json, Value};
use tessera_model::resource::{api_version, KindInfo};

use crate::api::columns;

/// `object` as served at `version` of its group. Istio's versions of a kind share one
/// schema, so converting is naming the version.
pub fn at_version(info: &KindInfo, version: &str, mut object: Value) -> Value {
    object["apiVersion"] = json!(api_version(info.group, version));
    object["kind"] = json!(info.name);
    object
}

/// A stored object as the API serves it: at `version`, with its `resourceVersion`.
pub fn served(info: &KindInfo, version: &str, stored: &crate::objects::Stored) -> Value {
    let mut v = at_version(info, version, stored.resource.to_json());
    v["metadata"]["resourceVersion"] = stored.resource_version.to_string().into();
    v
}

/// `{Kind}List` of `items` (already at `version`), at the store's `revision`.
pub fn list(info: &KindInfo, version: &str, items: Vec<Value>, revision: u64) -> Value {
    json!({
        "apiVersion": api_version(info.group, version),
        "kind": format!("{}List", info.name),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

/// Whether an `Accept` header asks for a Table (`application/json;as=Table;v=v1;g=meta.k8s.io`).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

/// A Table of `items` with the columns `kubectl get` prints for the kind; the `-o wide`
/// columns have priority 1 (kubectl shows them only with `-o wide`). Each row carries the
/// object's metadata, as the API server's default `includeObject=Metadata`.
pub fn table(kind: &str, items: &[Value], revision: u64) -> Value {
    let headers = columns::headers(kind, false, true);
    let definitions: Vec<Value> = headers
        .iter()
        .map(|(name, wide)| {
            json!({
                "name": title(name),
                "type": if *name == "RESTARTS" { "integer" } else { "string" },
                "format": if *name == "NAME" { "name" } else { "" },
                "description": "",
                "priority": if *wide { 1 } else { 0 },
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": columns::row(kind, &headers, o),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// `READY` → `Ready`, `CLUSTER-IP` → `Cluster-IP`: the API server's column names, which
/// kubectl prints in capitals.
fn title(header: &str) -> String {
    header
        .split('-')
        .map(|part| {
            part.split(' ')
                .map(title_word)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn title_word(w: &str) -> String {
    if w == "IP" {
        return w.to_string();
    }
    let lower = w.to_ascii_lowercase();
    let mut c = lower.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// A `Status` error as the API server sends it.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

/// 404 for an object: `pods "x" not found`.
pub fn not_found(info: &KindInfo, name: &str) -> Value {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", resource_name(info)),
        Some(json!({"name": name, "kind": info.plural, "group": info.group})),
    )
}

/// `pods`, `peerauthentications.security.istio.io`: how errors name a resource.
pub fn resource_name(info: &KindInfo) -> String {
    if info.group.is_empty() {
        info.plural.to_string()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_model::resource::Kind;

    #[test]
    fn table_columns_follow_kubectl() {
        let info = Kind::Pod.info();
        let pod = json!({
            "metadata": {"name": "sleep-1", "namespace": "full", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "sleep"}, {"name": "istio-proxy"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.7", "containerStatuses": [
                {"name": "sleep", "ready": true, "restartCount": 0},
                {"name": "istio-proxy", "ready": true, "restartCount": 2},
            ]},
        });
        let t = table(info.name, &[pod], 7);
        let names: Vec<(&str, i64)> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1)
            ]
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "sleep-1");
        assert_eq!(cells[1], "2/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(cells[5], "10.244.0.7");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "sleep-1");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn column_titles() {
        assert_eq!(title("CLUSTER-IP"), "Cluster-IP");
        assert_eq!(title("EXTERNAL-IP"), "External-IP");
        assert_eq!(title("PORT(S)"), "Port(s)");
        assert_eq!(title("UP-TO-DATE"), "Up-To-Date");
        assert_eq!(title("IP"), "IP");
    }

    #[test]
    fn table_is_asked_for_by_accept() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    #[test]
    fn errors_name_the_resource_as_kubectl_does() {
        let s = not_found(Kind::PeerAuthentication.info(), "default");
        assert_eq!(
            s["message"],
            "peerauthentications.security.istio.io \"default\" not found"
        );
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
    }
}
