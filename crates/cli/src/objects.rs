//! kubectl's printing of objects: the table columns of each kind, ages, and `describe`.

use serde_json::Value;
use tessera_contract::config::ProxyConfig;
use tessera_control::api::columns::{headers, or_none, pod_ip, pod_status_of, row, s};

use crate::table::Table;

pub use tessera_control::api::columns::age_secs;

/// The `get` table of `items` of one kind.
pub fn table(kind: &str, items: &[Value], with_namespace: bool, wide: bool) -> String {
    let headers = headers(kind, with_namespace, wide);
    let names: Vec<&str> = headers.iter().map(|(h, _)| *h).collect();
    let mut t = Table::new(&names);
    for o in items {
        t.row(row(kind, &headers, o));
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
