//! kubectl's columns of `get` for each kind, from an object's JSON: what `tessera get`
//! prints and what the Kubernetes API's Table answers carry, computed once.

use serde_json::Value;
use tessera_model::kube::PodStatus;

/// kubectl's ages: 45s, 12m, 5h, 3d.
pub fn age_secs(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// AGE: since `metadata.creationTimestamp`.
pub fn age(object: &Value) -> String {
    object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or("<unknown>".into(), |t| {
            let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
            age_secs(secs as u64)
        })
}

/// A JSON value as kubectl prints it in a cell: strings bare, null empty.
pub fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

fn labels(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn service_ports(o: &Value) -> String {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", s(&p["port"])),
                None => format!("{}/{proto}", s(&p["port"])),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn external_ip(o: &Value) -> String {
    let ty = o["spec"]["type"].as_str().unwrap_or("ClusterIP");
    let ingress: Vec<String> = o["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i["ip"]
                .as_str()
                .or(i["hostname"].as_str())
                .map(str::to_string)
        })
        .collect();
    if !ingress.is_empty() {
        ingress.join(",")
    } else if ty == "LoadBalancer" {
        "<pending>".into()
    } else {
        "<none>".into()
    }
}

/// The pod's status as the model types it (empty when it has none).
pub fn pod_status_of(o: &Value) -> PodStatus {
    serde_json::from_value(o["status"].clone()).unwrap_or_default()
}

fn pod_ready(o: &Value) -> String {
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = pod_status_of(o)
        .container_statuses
        .iter()
        .filter(|c| c.ready)
        .count();
    format!("{ready}/{total}")
}

/// kubectl's STATUS: the pod's reason or phase, unless a container is waiting or failed
/// (CrashLoopBackOff, ContainerCreating, ImageUnknown, Error), which says more.
fn pod_status(o: &Value) -> String {
    let status = pod_status_of(o);
    let container = status
        .container_statuses
        .iter()
        .filter_map(|c| c.not_running_reason())
        .find(|r| *r != "Completed");
    container
        .or(status.reason.as_deref())
        .or(status.phase.as_deref())
        .unwrap_or("Pending")
        .to_string()
}

fn pod_restarts(o: &Value) -> String {
    pod_status_of(o).restarts().to_string()
}

pub fn pod_ip(o: &Value) -> String {
    or_none(pod_status_of(o).pod_ip.unwrap_or_default())
}

/// The columns of `get KIND` (after NAMESPACE with -A, before AGE).
fn columns(kind: &str, wide: bool) -> Vec<&'static str> {
    let mut c = match kind {
        "Namespace" => vec!["STATUS"],
        "Service" => vec!["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"],
        "Pod" => vec!["READY", "STATUS", "RESTARTS"],
        "Deployment" => vec!["READY", "UP-TO-DATE", "AVAILABLE"],
        "ReplicationController" => vec!["DESIRED", "CURRENT", "READY"],
        "Secret" => vec!["TYPE", "DATA"],
        "ConfigMap" => vec!["DATA"],
        "ServiceAccount" => vec!["SECRETS"],
        "PeerAuthentication" => vec!["MODE"],
        "AuthorizationPolicy" => vec!["ACTION"],
        "DestinationRule" => vec!["HOST"],
        "VirtualService" => vec!["GATEWAYS", "HOSTS"],
        "CustomResourceDefinition" => vec!["CREATED AT"],
        _ => vec![],
    };
    if wide {
        match kind {
            "Service" => c.push("SELECTOR"),
            "Pod" => c.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]),
            _ => {}
        }
    }
    c
}

fn cell(kind: &str, column: &str, o: &Value) -> String {
    let spec = &o["spec"];
    let status = &o["status"];
    match (kind, column) {
        ("Namespace", "STATUS") => "Active".into(),
        ("Service", "TYPE") => spec["type"].as_str().unwrap_or("ClusterIP").into(),
        ("Service", "CLUSTER-IP") => or_none(s(&spec["clusterIP"])),
        ("Service", "EXTERNAL-IP") => external_ip(o),
        ("Service", "PORT(S)") => service_ports(o),
        ("Service", "SELECTOR") => or_none(labels(&spec["selector"])),
        ("Pod", "READY") => pod_ready(o),
        ("Pod", "STATUS") => pod_status(o),
        ("Pod", "RESTARTS") => pod_restarts(o),
        ("Pod", "IP") => pod_ip(o),
        ("Pod", "NODE") => or_none(s(&spec["nodeName"])),
        ("Pod", "NOMINATED NODE") => or_none(s(&status["nominatedNodeName"])),
        ("Pod", "READINESS GATES") => readiness_gates(o),
        ("Deployment", "READY") => format!(
            "{}/{}",
            status["readyReplicas"].as_i64().unwrap_or(0),
            spec["replicas"].as_i64().unwrap_or(1)
        ),
        ("Deployment", "UP-TO-DATE") => status["updatedReplicas"].as_i64().unwrap_or(0).to_string(),
        ("Deployment", "AVAILABLE") => status["availableReplicas"]
            .as_i64()
            .unwrap_or(0)
            .to_string(),
        ("ReplicationController", "DESIRED") => spec["replicas"].as_i64().unwrap_or(1).to_string(),
        ("ReplicationController", "CURRENT") => {
            status["replicas"].as_i64().unwrap_or(0).to_string()
        }
        ("ReplicationController", "READY") => {
            status["readyReplicas"].as_i64().unwrap_or(0).to_string()
        }
        ("Secret", "TYPE") => o["type"].as_str().unwrap_or("Opaque").into(),
        ("Secret", "DATA") => {
            let mut keys: Vec<&String> = o["data"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys())
                .collect();
            keys.extend(
                o["stringData"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.keys()),
            );
            keys.sort();
            keys.dedup();
            keys.len().to_string()
        }
        ("ConfigMap", "DATA") => (o["data"].as_object().map_or(0, |m| m.len())
            + o["binaryData"].as_object().map_or(0, |m| m.len()))
        .to_string(),
        ("ServiceAccount", "SECRETS") => o["secrets"].as_array().map_or(0, Vec::len).to_string(),
        ("PeerAuthentication", "MODE") => spec["mtls"]["mode"].as_str().unwrap_or("").into(),
        ("AuthorizationPolicy", "ACTION") => spec["action"].as_str().unwrap_or("ALLOW").into(),
        ("DestinationRule", "HOST") => s(&spec["host"]),
        ("VirtualService", "GATEWAYS") => list(&spec["gateways"]),
        ("VirtualService", "HOSTS") => list(&spec["hosts"]),
        ("CustomResourceDefinition", "CREATED AT") => s(&o["metadata"]["creationTimestamp"]),
        _ => String::new(),
    }
}

/// `READY/TOTAL` of the pod's readiness gates, or `<none>` without any.
fn readiness_gates(o: &Value) -> String {
    let gates: Vec<&str> = o["spec"]["readinessGates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["conditionType"].as_str())
        .collect();
    if gates.is_empty() {
        return "<none>".into();
    }
    let ready = gates
        .iter()
        .filter(|t| {
            o["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == **t && c["status"] == "True")
        })
        .count();
    format!("{ready}/{}", gates.len())
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(s).collect();
    format!("[{}]", items.join(","))
}

/// The header of `get KIND` (NAMESPACE with `all_namespaces`, NAME, the kind's columns,
/// AGE, then the `-o wide` ones) and whether each is shown only with `-o wide`.
pub fn headers(kind: &str, with_namespace: bool, wide: bool) -> Vec<(&'static str, bool)> {
    let cols = columns(kind, true);
    let only_wide = |c: &str| {
        matches!(
            c,
            "SELECTOR" | "IP" | "NODE" | "NOMINATED NODE" | "READINESS GATES"
        )
    };
    let mut headers = Vec::new();
    if with_namespace {
        headers.push(("NAMESPACE", false));
    }
    headers.push(("NAME", false));
    headers.extend(cols.iter().filter(|c| !only_wide(c)).map(|c| (*c, false)));
    // A definition shows when it was created instead of its age, as kubectl's table does.
    if kind != "CustomResourceDefinition" {
        headers.push(("AGE", false));
    }
    headers.extend(
        cols.iter()
            .filter(|c| only_wide(c) && wide)
            .map(|c| (*c, true)),
    );
    headers
}

/// One row of `get KIND`: the cells under `headers`.
pub fn row(kind: &str, headers: &[(&str, bool)], o: &Value) -> Vec<String> {
    headers
        .iter()
        .map(|(h, _)| match *h {
            "NAMESPACE" => s(&o["metadata"]["namespace"]),
            "NAME" => s(&o["metadata"]["name"]),
            "AGE" => age(o),
            c => cell(kind, c, o),
        })
        .collect()
}
