//! Discovery documents, generated from the model's kinds: the server version, the legacy
//! and named groups with their versions, and each group version's resources with their
//! verbs, short names and categories, as `kubectl` reads them to map `po` to
//! `/api/v1/namespaces/{ns}/pods`.

use serde_json::{json, Value};
use tessera_model::resource::{api_version, KindInfo, KINDS};

/// The Kubernetes version this API speaks (kubectl warns past one minor version of skew).
pub const MAJOR: &str = "1";
pub const MINOR: &str = "32";

/// What every served resource allows today.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-tessera.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `/api`.
pub fn legacy_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// The named groups in the order of the model's kinds, each with its versions (the
/// preferred one first, as the model lists them).
fn named_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        let entry = match groups.iter_mut().find(|(g, _)| *g == k.group) {
            Some(e) => e,
            None => {
                groups.push((k.group, Vec::new()));
                groups.last_mut().expect("pushed")
            }
        };
        for v in k.versions {
            if !entry.1.contains(v) {
                entry.1.push(v);
            }
        }
    }
    groups.push((super::crd::GROUP, vec![super::crd::VERSION]));
    groups
}

fn group_json(name: &str, versions: &[&str]) -> Value {
    let gv = |v: &str| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    json!({
        "name": name,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(versions[0]),
    })
}

/// `/apis`.
pub fn groups() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": named_groups().iter().map(|(g, v)| group_json(g, v)).collect::<Vec<_>>(),
    })
}

/// `/apis/{group}`, or `None` for a group the model does not have.
pub fn group(name: &str) -> Option<Value> {
    named_groups()
        .iter()
        .find(|(g, _)| *g == name)
        .map(|(g, v)| {
            let mut doc = group_json(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

fn singular(info: &KindInfo) -> String {
    info.name.to_ascii_lowercase()
}

/// A kind's subresources and their verbs: `status` where objects have one, and the pods'
/// `log`, `exec` and `attach`.
fn subresources(info: &KindInfo) -> Vec<(&'static str, &'static [&'static str])> {
    let mut out: Vec<(&str, &[&str])> = Vec::new();
    if info.has_status() {
        out.push(("status", &["get", "patch", "update"]));
    }
    if info.plural == "pods" {
        out.push(("log", &["get"]));
        out.push(("exec", &["create", "get"]));
        out.push(("attach", &["create", "get"]));
    }
    out
}

/// `/api/v1` or `/apis/{group}/{version}`: an APIResourceList.
pub fn resources(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    if (group, version) == (super::crd::GROUP, super::crd::VERSION) {
        list.push(super::crd::api_resource());
    }
    for info in KINDS
        .iter()
        .filter(|k| k.group == group && k.versions.contains(&version))
    {
        list.push(json!({
            "name": info.plural,
            "singularName": singular(info),
            "namespaced": info.namespaced,
            "kind": info.name,
            "verbs": VERBS,
            "shortNames": info.short_names,
            "categories": info.categories(),
        }));
        for (sub, verbs) in subresources(info) {
            list.push(json!({
                "name": format!("{}/{sub}", info.plural),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": if sub == "status" { info.name } else { "Status" },
                "verbs": verbs,
            }));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": api_version(group, version),
        "resources": list,
    })
}

/// The media type of aggregated discovery (one document per `/api` and `/apis` with every
/// group's resources), which clients ask for first.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header takes aggregated discovery (v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=APIGroupDiscoveryList")
            && params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
    })
}

/// `/api` (`legacy`) or `/apis` as an APIGroupDiscoveryList: the same resources as the
/// per-version lists, grouped.
pub fn aggregated(legacy: bool) -> Value {
    let groups: Vec<(&str, Vec<&str>)> = if legacy {
        vec![("", vec!["v1"])]
    } else {
        named_groups()
    };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|version| {
                    let list = resources(group, version);
                    let entries = list["resources"].as_array().cloned().unwrap_or_default();
                    let (subs, mains): (Vec<Value>, Vec<Value>) = entries
                        .into_iter()
                        .partition(|r| r["name"].as_str().is_some_and(|n| n.contains('/')));
                    let resources: Vec<Value> = mains
                        .iter()
                        .map(|r| {
                            let name = r["name"].as_str().unwrap_or("");
                            let subresources: Vec<Value> = subs
                                .iter()
                                .filter_map(|s| {
                                    let (parent, sub) = s["name"].as_str()?.split_once('/')?;
                                    (parent == name).then(|| json!({
                                        "subresource": sub,
                                        "responseKind": {"group": group, "version": version, "kind": s["kind"]},
                                        "verbs": s["verbs"],
                                    }))
                                })
                                .collect();
                            json!({
                                "resource": name,
                                "responseKind": {"group": group, "version": version, "kind": r["kind"]},
                                "scope": if r["namespaced"] == true { "Namespaced" } else { "Cluster" },
                                "singularResource": r["singularName"],
                                "verbs": r["verbs"],
                                "shortNames": r["shortNames"],
                                "categories": r["categories"],
                                "subresources": subresources,
                            })
                        })
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_list_every_served_version_preferred_first() {
        let g = groups();
        let names: Vec<&str> = g["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "apps",
                "security.istio.io",
                "authentication.istio.io",
                "networking.istio.io",
                "apiextensions.k8s.io"
            ]
        );
        let net = group("networking.istio.io").unwrap();
        assert_eq!(net["preferredVersion"]["version"], "v1");
        assert_eq!(net["versions"].as_array().unwrap().len(), 3);
        assert_eq!(net["kind"], "APIGroup");
        assert!(group("batch").is_none());
    }

    #[test]
    fn resources_carry_scope_short_names_and_categories() {
        let core = resources("", "v1");
        assert_eq!(core["groupVersion"], "v1");
        let pods = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        let ns = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "namespaces")
            .unwrap();
        assert_eq!(ns["namespaced"], false);

        let legacy = resources("authentication.istio.io", "v1alpha1");
        let names: Vec<&str> = legacy["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "policies",
                "policies/status",
                "meshpolicies",
                "meshpolicies/status"
            ]
        );
        assert_eq!(
            legacy["resources"][0]["categories"],
            json!(["istio-io", "authentication-istio-io"])
        );
    }

    #[test]
    fn aggregated_discovery_groups_the_same_resources() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
        let core = aggregated(true);
        let pods = &core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .cloned()
            .unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["responseKind"]["kind"], "Pod");
        assert_eq!(pods["shortNames"], json!(["po"]));
        let subs: Vec<&str> = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        assert_eq!(subs, ["status", "log", "exec", "attach"]);
        let named = aggregated(false);
        let groups: Vec<&str> = named["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(
            groups.contains(&"networking.istio.io") && groups.contains(&"apiextensions.k8s.io")
        );
        let net = named["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "networking.istio.io")
            .unwrap();
        let versions: Vec<&str> = net["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["v1", "v1beta1", "v1alpha3"]);
    }
}
