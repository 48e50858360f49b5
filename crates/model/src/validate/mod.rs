//! Semantic checks: what types alone cannot say. Messages follow Istio's and Kubernetes'
//! own texts where users know them, and each says what is allowed or how to fix it.

mod authz;
mod client_tls;
mod connection_pool;
mod cors;
mod destination_rule;
mod destinations;
mod fault;
mod gateway;
mod headers;
mod http_route;
mod kube;
mod load_balancer;
mod security;
mod server_tls;
mod sidecar;
mod traffic;
mod values;
mod virtual_service;

use std::collections::BTreeMap;

use crate::meta::{
    subset, validate_dns_label, validate_dns_subdomain, validate_label_key, validate_label_value,
    ObjectMeta,
};
use crate::problem::{FieldPath, Finding};
use crate::resource::{Kind, Resource};

use self::authz::check_authorization_policy;
pub use self::authz::{parse_ip_block, ConditionKey};
use self::destination_rule::check_destination_rule;
use self::gateway::check_gateway;
pub use self::kube::check_sidecar_annotations;
use self::kube::*;
pub use self::security::legacy_policy_errors;
use self::security::*;
use self::sidecar::check_sidecar;
use self::virtual_service::check_virtual_service;

#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// Istio's mesh root namespace (meshConfig `rootNamespace`).
    pub root_namespace: String,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            root_namespace: "istio-system".to_string(),
        }
    }
}

/// Gateway and Sidecar server protocols Istio accepts.
pub const SERVER_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "REDIS", "MYSQL", "UDP",
];

fn p(s: &str) -> FieldPath {
    FieldPath::parse(s)
}

/// Runs every semantic check that applies to the resource.
pub fn check(resource: &Resource, opts: &ValidateOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    check_meta(resource.kind(), resource.metadata(), &mut out);
    match resource {
        Resource::Namespace(_) | Resource::ServiceAccount(_) | Resource::ConfigMap(_) => {}
        Resource::Secret(s) => check_secret(s, &mut out),
        Resource::Service(s) => check_service(s, &mut out),
        Resource::Deployment(d) => {
            let spec = p("spec");
            if d.spec.selector.is_empty() {
                out.push(
                    Finding::error(spec.field("selector"), "missing required field: a Deployment needs spec.selector")
                        .hint("set spec.selector.matchLabels to the labels of spec.template.metadata.labels"),
                );
            } else if !d.spec.selector.matches(&d.spec.template.metadata.labels) {
                out.push(Finding::error(
                    spec.field("template").field("metadata").field("labels"),
                    "`selector` does not match template `labels`",
                ).hint("every spec.selector.matchLabels entry must appear in spec.template.metadata.labels"));
            }
            check_replicas(d.spec.replicas, &spec, &mut out);
            check_template(&d.spec.template, &spec.field("template"), &mut out);
        }
        Resource::ReplicationController(rc) => {
            let spec = p("spec");
            if !rc.spec.selector.is_empty()
                && !subset(&rc.spec.selector, &rc.spec.template.metadata.labels)
            {
                out.push(Finding::error(
                    spec.field("template").field("metadata").field("labels"),
                    "`selector` does not match template `labels`",
                ));
            }
            if rc.spec.selector.is_empty() && rc.spec.template.metadata.labels.is_empty() {
                out.push(Finding::error(
                    spec.field("template").field("metadata").field("labels"),
                    "a ReplicationController needs spec.selector or template labels to find its pods",
                ));
            }
            check_replicas(rc.spec.replicas, &spec, &mut out);
            check_template(&rc.spec.template, &spec.field("template"), &mut out);
        }
        Resource::Pod(pod) => {
            check_annotations(&pod.metadata, &p("metadata"), &mut out);
            check_pod_spec(&pod.spec, &p("spec"), &mut out);
        }
        Resource::PeerAuthentication(pa) => check_peer_authentication(pa, opts, &mut out),
        Resource::AuthorizationPolicy(ap) => check_authorization_policy(ap, opts, &mut out),
        Resource::Policy(policy) => {
            check_legacy_policy(&policy.metadata, &policy.spec, false, &mut out)
        }
        Resource::MeshPolicy(policy) => {
            check_legacy_policy(&policy.metadata, &policy.spec, true, &mut out)
        }
        Resource::DestinationRule(dr) => check_destination_rule(dr, &mut out),
        Resource::Sidecar(sc) => check_sidecar(sc, &mut out),
        Resource::Gateway(gw) => check_gateway(gw, &mut out),
        Resource::VirtualService(vs) => check_virtual_service(vs, &mut out),
    }
    out
}

fn check_meta(kind: Kind, meta: &ObjectMeta, out: &mut Vec<Finding>) {
    let path = p("metadata");
    if meta.name.is_empty() {
        if meta.generate_name.is_none() {
            out.push(Finding::error(
                path.field("name"),
                "missing required field \"name\"",
            ));
        }
    } else {
        let result = match kind {
            Kind::Namespace | Kind::Service => validate_dns_label(&meta.name),
            _ => validate_dns_subdomain(&meta.name),
        };
        if let Err(e) = result {
            out.push(Finding::error(
                path.field("name"),
                format!("\"{}\": {e}", meta.name),
            ));
        }
    }
    if let Some(ns) = &meta.namespace {
        if let Err(e) = validate_dns_label(ns) {
            out.push(Finding::error(
                path.field("namespace"),
                format!("\"{ns}\": {e}"),
            ));
        }
    }
    check_labels(&meta.labels, &path.field("labels"), out);
    for key in meta.annotations.keys() {
        if let Err(e) = validate_label_key(key) {
            out.push(Finding::error(
                path.field("annotations").key(key),
                format!("invalid annotation key \"{key}\": {e}"),
            ));
        }
    }
}

fn check_labels(labels: &BTreeMap<String, String>, path: &FieldPath, out: &mut Vec<Finding>) {
    for (k, v) in labels {
        if let Err(e) = validate_label_key(k) {
            out.push(Finding::error(
                path.key(k),
                format!("invalid label key \"{k}\": {e}"),
            ));
        }
        if let Err(e) = validate_label_value(v) {
            out.push(Finding::error(
                path.key(k),
                format!("invalid label value \"{v}\": {e}"),
            ));
        }
    }
}

fn check_port_number(n: i64, path: &FieldPath, out: &mut Vec<Finding>) {
    if !(1..=65535).contains(&n) {
        out.push(Finding::error(
            path.clone(),
            format!("port {n} must be in range 1..65535"),
        ));
    }
}

fn check_replicas(replicas: Option<i32>, spec: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(r) = replicas.filter(|r| *r < 0) {
        out.push(Finding::error(
            spec.field("replicas"),
            format!("{r} must be greater than or equal to 0"),
        ));
    }
}

fn check_protocol(protocol: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    if !SERVER_PROTOCOLS.contains(&protocol.to_ascii_uppercase().as_str()) {
        out.push(Finding::error(
            path.clone(),
            format!(
                "unrecognized protocol \"{protocol}\"; supported: {}",
                SERVER_PROTOCOLS.join(", ")
            ),
        ));
    }
}
