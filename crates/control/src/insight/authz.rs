//! `tessera analyze` on AuthorizationPolicies, from the world as the compiler reads it:
//! policies that apply to no workload, values naming identities or namespaces no
//! workload has, HTTP-only fields where every port is TCP (Istio's rule makes an ALLOW
//! rule dead and a DENY rule broader there), and ALLOW policies a DENY-everything
//! policy shadows.

use std::collections::BTreeSet;

use tessera_model::istio::{AuthorizationAction, Rule};
use tessera_model::validate::ConditionKey;

use super::finding::{code, Finding, Level};
use crate::compile::authz::applies;
use crate::compile::port_protocol;
use crate::registry::WorkloadEntry;
use crate::world::{AuthorizationRule, World};

pub(crate) fn findings(world: &World) -> Vec<Finding> {
    let root = world.options.root_namespace.as_str();
    let proxied: Vec<&WorkloadEntry> = world
        .registry
        .workloads
        .iter()
        .filter(|w| w.has_sidecar || w.is_gateway)
        .collect();
    let identities: BTreeSet<String> = world
        .registry
        .workloads
        .iter()
        .map(|w| {
            world
                .identity_of(w)
                .trim_start_matches("spiffe://")
                .to_string()
        })
        .collect();
    let namespaces: BTreeSet<&str> = world
        .registry
        .workloads
        .iter()
        .map(|w| w.namespace.as_str())
        .collect();
    let mut out = Vec::new();
    for p in &world.authorization {
        let resource = format!("AuthorizationPolicy {}/{}", p.namespace, p.name);
        let selected: Vec<&WorkloadEntry> = proxied
            .iter()
            .copied()
            .filter(|w| applies(p, w, root))
            .collect();
        if selected.is_empty() {
            out.push(Finding {
                level: Level::Warning,
                code: code::AUTHZ_SELECTS_NOTHING.into(),
                resource: resource.clone(),
                message: if p.targets_resources {
                    "it names targetRefs (Gateway API resources), which this mesh does not have: it applies to no workload".into()
                } else {
                    "it applies to no workload with a sidecar (or gateway): no proxy enforces it".into()
                },
                fix: "select the workloads with spec.selector.matchLabels (in their namespace), or delete it".into(),
            });
        }
        unknown_values(p, &identities, &namespaces, &resource, &mut out);
        if !selected.is_empty() && selected.iter().all(|w| only_tcp(world, w)) {
            http_on_tcp(p, &resource, &mut out);
        }
        shadowed(world, p, &selected, &resource, &mut out);
    }
    out
}

/// Principals and namespaces (exact values) that no workload has.
fn unknown_values(
    p: &AuthorizationRule,
    identities: &BTreeSet<String>,
    namespaces: &BTreeSet<&str>,
    resource: &str,
    out: &mut Vec<Finding>,
) {
    let exact = |v: &&String| !v.contains('*');
    for source in p
        .spec
        .rules
        .iter()
        .flat_map(|r| r.from.iter().flatten())
        .filter_map(|f| f.source.as_ref())
    {
        for v in source
            .principals
            .iter()
            .chain(&source.not_principals)
            .filter(exact)
        {
            if !identities.contains(v.as_str()) {
                out.push(Finding {
                    level: Level::Warning,
                    code: code::AUTHZ_UNKNOWN_IDENTITY.into(),
                    resource: resource.into(),
                    message: format!("principal {v:?} is the identity of no workload"),
                    fix: "check the namespace and service account (<trust-domain>/ns/<namespace>/sa/<service-account>)".into(),
                });
            }
        }
        for v in source
            .namespaces
            .iter()
            .chain(&source.not_namespaces)
            .filter(exact)
        {
            if !namespaces.contains(v.as_str()) {
                out.push(Finding {
                    level: Level::Warning,
                    code: code::AUTHZ_UNKNOWN_IDENTITY.into(),
                    resource: resource.into(),
                    message: format!("namespace {v:?} has no workload"),
                    fix: "check the namespace's name".into(),
                });
            }
        }
    }
}

/// Every port of `w` is declared TCP.
fn only_tcp(world: &World, w: &WorkloadEntry) -> bool {
    let mut ports = world
        .registry
        .services_of(w)
        .flat_map(|s| s.ports.iter())
        .filter_map(|p| port_protocol(p.protocol))
        .peekable();
    ports.peek().is_some() && ports.all(|p| p == tessera_contract::config::PortProtocol::Tcp)
}

fn has_http_fields(r: &Rule) -> bool {
    let op =
        r.to.iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .any(|o| {
                !(o.hosts.is_empty()
                    && o.not_hosts.is_empty()
                    && o.methods.is_empty()
                    && o.not_methods.is_empty()
                    && o.paths.is_empty()
                    && o.not_paths.is_empty())
            });
    let src = r
        .from
        .iter()
        .flatten()
        .filter_map(|f| f.source.as_ref())
        .any(|s| !s.request_principals.is_empty() || !s.not_request_principals.is_empty());
    let when = r
        .when
        .iter()
        .flatten()
        .any(|c| ConditionKey::parse(&c.key).is_some_and(|k| k.is_http_only()));
    op || src || when
}

/// HTTP-only fields on workloads whose ports are all TCP.
fn http_on_tcp(p: &AuthorizationRule, resource: &str, out: &mut Vec<Finding>) {
    for (i, rule) in p.spec.rules.iter().enumerate() {
        if !has_http_fields(rule) {
            continue;
        }
        let (message, fix) = match p.spec.action {
            AuthorizationAction::Allow => (
                format!("rule {i} has HTTP-only fields (hosts, methods, paths, request principals or request.* conditions) and every port it selects is TCP: the rule matches no connection"),
                "remove the HTTP-only fields, or declare the ports HTTP".to_string(),
            ),
            _ => (
                format!("rule {i} has HTTP-only fields and every port it selects is TCP: they are ignored, so the rule matches more connections than it says"),
                "remove the HTTP-only fields, or declare the ports HTTP".to_string(),
            ),
        };
        out.push(Finding {
            level: Level::Warning,
            code: code::AUTHZ_HTTP_ON_TCP.into(),
            resource: resource.into(),
            message,
            fix,
        });
    }
}

/// An ALLOW policy whose workloads are all denied everything by a DENY policy.
fn shadowed(
    world: &World,
    p: &AuthorizationRule,
    selected: &[&WorkloadEntry],
    resource: &str,
    out: &mut Vec<Finding>,
) {
    if p.spec.action != AuthorizationAction::Allow || selected.is_empty() {
        return;
    }
    let root = world.options.root_namespace.as_str();
    let deny_all = |d: &AuthorizationRule| {
        d.spec.action == AuthorizationAction::Deny
            && d.spec
                .rules
                .iter()
                .any(|r| r.from.is_none() && r.to.is_none() && r.when.is_none())
    };
    let shadowing = world
        .authorization
        .iter()
        .find(|d| deny_all(d) && selected.iter().all(|w| applies(d, w, root)));
    if let Some(d) = shadowing {
        out.push(Finding {
            level: Level::Warning,
            code: code::AUTHZ_SHADOWED.into(),
            resource: resource.into(),
            message: format!(
                "AuthorizationPolicy {}/{} denies every request to the workloads it selects: its ALLOW rules never take effect",
                d.namespace, d.name
            ),
            fix: format!("narrow the DENY rule of {}/{}", d.namespace, d.name),
        });
    }
}
