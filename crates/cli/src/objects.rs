//! kubectl's printing of objects: the table columns of each kind, ages, and `describe`.

use serde_json::Value;
use tessera_contract::config::ProxyConfig;
use tessera_model::kube::PodStatus;

use crate::table::Table;

/// kubectl's ages: 45s, 12m, 5h, 3d.
pub fn age_secs(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn age(object: &Value) -> String {
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

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn or_none(v: String) -> String {
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
fn pod_status_of(o: &Value) -> PodStatus {
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

fn pod_ip(o: &Value) -> String {
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
        "DestinationRule" => vec!["HOST"],
        "VirtualService" => vec!["GATEWAYS", "HOSTS"],
        _ => vec![],
    };
    if wide {
        match kind {
            "Service" => c.push("SELECTOR"),
            "Pod" => c.push("IP"),
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
        ("DestinationRule", "HOST") => s(&spec["host"]),
        ("VirtualService", "GATEWAYS") => list(&spec["gateways"]),
        ("VirtualService", "HOSTS") => list(&spec["hosts"]),
        _ => String::new(),
    }
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(s).collect();
    format!("[{}]", items.join(","))
}

/// The `get` table of `items` of one kind.
pub fn table(kind: &str, items: &[Value], with_namespace: bool, wide: bool) -> String {
    let cols = columns(kind, wide);
    let mut headers = Vec::new();
    if with_namespace {
        headers.push("NAMESPACE");
    }
    headers.push("NAME");
    headers.extend(
        cols.iter()
            .copied()
            .filter(|c| *c != "SELECTOR" && *c != "IP"),
    );
    headers.push("AGE");
    headers.extend(
        cols.iter()
            .copied()
            .filter(|c| *c == "SELECTOR" || *c == "IP"),
    );
    let mut t = Table::new(&headers);
    for o in items {
        let row = headers
            .iter()
            .map(|h| match *h {
                "NAMESPACE" => s(&o["metadata"]["namespace"]),
                "NAME" => s(&o["metadata"]["name"]),
                "AGE" => age(o),
                c => cell(kind, c, o),
            })
            .collect();
        t.row(row);
    }
    t.to_string()
}

fn map_lines(label: &str, v: &Value) -> String {
    let pairs: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect();
    if pairs.is_empty() {
        return format!("{label:<14}<none>\n");
    }
    let mut out = String::new();
    for (i, p) in pairs.iter().enumerate() {
        if i == 0 {
            out.push_str(&format!("{label:<14}{p}\n"));
        } else {
            out.push_str(&format!("{:<14}{p}\n", ""));
        }
    }
    out
}

/// `describe KIND NAME`: the object's essentials, and for a pod what its proxy was told
/// (identity, the mode of each inbound port and why).
pub fn describe(kind: &str, o: &Value, mesh: Option<&ProxyConfig>) -> String {
    let m = &o["metadata"];
    let mut out = String::new();
    out.push_str(&format!("{:<14}{}\n", "Name:", s(&m["name"])));
    if !m["namespace"].is_null() {
        out.push_str(&format!("{:<14}{}\n", "Namespace:", s(&m["namespace"])));
    }
    out.push_str(&map_lines("Labels:", &m["labels"]));
    out.push_str(&map_lines("Annotations:", &m["annotations"]));
    out.push_str(&format!(
        "{:<14}{}\n",
        "Created:",
        or_none(s(&m["creationTimestamp"]))
    ));
    match kind {
        "Service" => {
            let spec = &o["spec"];
            out.push_str(&map_lines("Selector:", &spec["selector"]));
            out.push_str(&format!(
                "{:<14}{}\n",
                "Type:",
                spec["type"].as_str().unwrap_or("ClusterIP")
            ));
            out.push_str(&format!(
                "{:<14}{}\n",
                "IP:",
                or_none(s(&spec["clusterIP"]))
            ));
            for p in spec["ports"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or("<unset>");
                out.push_str(&format!(
                    "{:<14}{name}  {}/{}\n",
                    "Port:",
                    s(&p["port"]),
                    p["protocol"].as_str().unwrap_or("TCP")
                ));
                let target = if p["targetPort"].is_null() {
                    s(&p["port"])
                } else {
                    s(&p["targetPort"])
                };
                out.push_str(&format!(
                    "{:<14}{target}/{}\n",
                    "TargetPort:",
                    p["protocol"].as_str().unwrap_or("TCP")
                ));
            }
        }
        "Pod" => {
            let spec = &o["spec"];
            let sa = spec["serviceAccountName"]
                .as_str()
                .or(spec["serviceAccount"].as_str())
                .unwrap_or("default");
            out.push_str(&format!("Service Account:  {sa}\n"));
            out.push_str(&format!(
                "{:<14}{}\n",
                "Status:",
                pod_status_of(o).phase.as_deref().unwrap_or("Pending")
            ));
            out.push_str(&format!("{:<14}{}\n", "IP:", pod_ip(o)));
            out.push_str("Containers:\n");
            for c in spec["containers"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  {}:\n    Image:  {}\n",
                    s(&c["name"]),
                    or_none(s(&c["image"]))
                ));
            }
            match mesh {
                Some(cfg) => {
                    out.push_str("Mesh:\n");
                    out.push_str(&format!("  Identity:      {}\n", cfg.node.identity));
                    out.push_str(&format!(
                        "  Other ports:   {:?}\n",
                        cfg.inbound.default_mode
                    ));
                    for p in &cfg.inbound.ports {
                        out.push_str(&format!(
                            "  Port {} ({:?}): {:?} — {}\n",
                            p.port, p.protocol, p.mode, p.reason
                        ));
                    }
                }
                None => out.push_str("Mesh:         <not registered>\n"),
            }
        }
        _ => {
            if !o["spec"].is_null() {
                out.push_str("Spec:\n");
                let yaml = serde_norway::to_string(&o["spec"]).unwrap_or_default();
                for line in yaml.lines() {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
    }
    out.push_str("Events:       <none>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_rows_have_kubectl_columns() {
        let svc = json!({
            "metadata": {"name": "httpbin", "namespace": "full"},
            "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 8000, "name": "http"}], "selector": {"app": "httpbin"}}
        });
        let t = table("Service", &[svc], true, true);
        let mut lines = t.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAMESPACE",
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "SELECTOR"
            ]
        );
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "full",
                "httpbin",
                "ClusterIP",
                "10.96.0.2",
                "<none>",
                "8000/TCP",
                "<unknown>",
                "app=httpbin"
            ]
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age_secs(5), "5s");
        assert_eq!(age_secs(600), "10m");
        assert_eq!(age_secs(3 * 3600), "3h");
        assert_eq!(age_secs(5 * 86_400), "5d");
    }
}
