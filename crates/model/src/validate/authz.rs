//! `security.istio.io` AuthorizationPolicy with Istio's admission rules and wording, and
//! the mistakes Istio lets through that make a policy do nothing or too much.

use std::net::IpAddr;

use super::*;

use crate::istio::{AuthorizationAction, AuthorizationPolicy, Condition, Operation, Source};
use crate::problem::{FieldPath, Finding};

/// The attribute a `when` condition names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    ConnectionSni,
    /// `request.headers[name]` (the name lower-cased).
    RequestHeader(String),
    RequestAuthPrincipal,
    RequestAuthAudiences,
    RequestAuthPresenter,
    /// `request.auth.claims[name]` (nested: `claims[a][b]`).
    RequestAuthClaims(Vec<String>),
}

impl ConditionKey {
    /// Reads a key as Istio spells it; `None` for one it does not know.
    pub fn parse(key: &str) -> Option<ConditionKey> {
        Some(match key {
            "source.ip" => ConditionKey::SourceIp,
            "remote.ip" => ConditionKey::RemoteIp,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.principal" => ConditionKey::SourcePrincipal,
            "destination.ip" => ConditionKey::DestinationIp,
            "destination.port" => ConditionKey::DestinationPort,
            "connection.sni" => ConditionKey::ConnectionSni,
            "request.auth.principal" => ConditionKey::RequestAuthPrincipal,
            "request.auth.audiences" => ConditionKey::RequestAuthAudiences,
            "request.auth.presenter" => ConditionKey::RequestAuthPresenter,
            _ => {
                if let Some(name) = bracketed(key, "request.headers") {
                    let name = name.first().filter(|n| !n.is_empty())?;
                    return Some(ConditionKey::RequestHeader(name.to_ascii_lowercase()));
                }
                let claims = bracketed(key, "request.auth.claims")?;
                if claims.is_empty() || claims.iter().any(String::is_empty) {
                    return None;
                }
                return Some(ConditionKey::RequestAuthClaims(claims));
            }
        })
    }

    /// Whether only an HTTP request has the attribute.
    pub fn is_http_only(&self) -> bool {
        matches!(
            self,
            ConditionKey::RequestHeader(_)
                | ConditionKey::RequestAuthPrincipal
                | ConditionKey::RequestAuthAudiences
                | ConditionKey::RequestAuthPresenter
                | ConditionKey::RequestAuthClaims(_)
        )
    }
}

/// `prefix[a][b]` → `[a, b]`.
fn bracketed(key: &str, prefix: &str) -> Option<Vec<String>> {
    let mut rest = key.strip_prefix(prefix)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        out.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

/// An IP address or a CIDR block, as `ipBlocks` and the IP conditions take them.
pub fn parse_ip_block(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((ip, len))
}

pub(super) fn check_authorization_policy(
    ap: &AuthorizationPolicy,
    opts: &ValidateOptions,
    out: &mut Vec<Finding>,
) {
    let spec = p("spec");
    let s = &ap.spec;
    let has_selector = s.selector.is_some();
    if has_selector && (s.target_ref.is_some() || !s.target_refs.is_empty()) {
        out.push(Finding::error(
            spec.clone(),
            "only one of targetRefs or workload selector can be set",
        ));
    }
    if s.target_ref.is_some() && !s.target_refs.is_empty() {
        out.push(Finding::error(
            spec.field("targetRef"),
            "targetRef and targetRefs cannot both be set",
        ));
    }
    match (s.action, &s.provider) {
        (AuthorizationAction::Custom, None) => out.push(Finding::error(
            spec.field("provider"),
            "must specify provider when using CUSTOM action",
        )),
        (AuthorizationAction::Custom, Some(_)) => out.push(
            Finding::error(
                spec.field("action"),
                "CUSTOM action (an external authorizer) is not supported by Tessera",
            )
            .hint("use ALLOW, DENY or AUDIT: Tessera has no extension providers"),
        ),
        (_, Some(_)) => out.push(Finding::error(
            spec.field("provider"),
            "provider is only allowed when using CUSTOM action",
        )),
        (_, None) => {}
    }
    if let Some(sel) = &s.selector {
        check_labels(
            &sel.match_labels,
            &spec.field("selector").field("matchLabels"),
            out,
        );
        if ap.metadata.namespace.as_deref() == Some(opts.root_namespace.as_str())
            && !sel.match_labels.is_empty()
        {
            out.push(Finding::warning(
                spec.field("selector"),
                format!(
                    "a selector in the root namespace {} selects the matching workloads of every namespace",
                    opts.root_namespace
                ),
            ));
        }
    }
    if s.rules.is_empty() && s.action == AuthorizationAction::Allow {
        out.push(
            Finding::warning(
                spec.clone(),
                "an ALLOW policy without rules allows nothing: every request to the workloads it selects is denied",
            )
            .hint("that is Istio's allow-nothing policy; add rules to allow some traffic"),
        );
    }
    for (i, rule) in s.rules.iter().enumerate() {
        let at = spec.field("rules").index(i);
        if let Some(from) = &rule.from {
            if from.is_empty() {
                out.push(Finding::error(
                    at.field("from"),
                    format!("`from` must not be empty, found at rule {i}"),
                ));
            }
            for (j, f) in from.iter().enumerate() {
                let path = at.field("from").index(j).field("source");
                match &f.source {
                    None => out.push(Finding::error(
                        path,
                        format!("`from.source` must not be nil, found at rule {i}"),
                    )),
                    Some(src) => check_source(src, i, &path, out),
                }
            }
        }
        if let Some(to) = &rule.to {
            if to.is_empty() {
                out.push(Finding::error(
                    at.field("to"),
                    format!("`to` must not be empty, found at rule {i}"),
                ));
            }
            for (j, t) in to.iter().enumerate() {
                let path = at.field("to").index(j).field("operation");
                match &t.operation {
                    None => out.push(Finding::error(
                        path,
                        format!("`to.operation` must not be nil, found at rule {i}"),
                    )),
                    Some(op) => check_operation(op, i, &path, out),
                }
            }
        }
        for (j, c) in rule.when.iter().flatten().enumerate() {
            check_condition(c, &at.field("when").index(j), out);
        }
    }
}

fn check_source(src: &Source, rule: usize, path: &FieldPath, out: &mut Vec<Finding>) {
    let fields: [&[String]; 10] = [
        &src.principals,
        &src.not_principals,
        &src.request_principals,
        &src.not_request_principals,
        &src.namespaces,
        &src.not_namespaces,
        &src.ip_blocks,
        &src.not_ip_blocks,
        &src.remote_ip_blocks,
        &src.not_remote_ip_blocks,
    ];
    if fields.iter().all(|f| f.is_empty()) {
        out.push(Finding::error(
            path.clone(),
            format!("`from.source` must not be empty, found at rule {rule}"),
        ));
    }
    for (name, values) in [
        ("ipBlocks", &src.ip_blocks),
        ("notIpBlocks", &src.not_ip_blocks),
        ("remoteIpBlocks", &src.remote_ip_blocks),
        ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
    ] {
        for (k, v) in values.iter().enumerate() {
            if parse_ip_block(v).is_none() {
                out.push(Finding::error(
                    path.field(name).index(k),
                    format!("invalid IP address or CIDR range: {v}"),
                ));
            }
        }
    }
    for (name, values) in [
        ("principals", &src.principals),
        ("notPrincipals", &src.not_principals),
    ] {
        for (k, v) in values.iter().enumerate() {
            check_principal(v, &path.field(name).index(k), out);
        }
    }
    for (name, values) in [
        ("principals", &src.principals),
        ("notPrincipals", &src.not_principals),
        ("requestPrincipals", &src.request_principals),
        ("notRequestPrincipals", &src.not_request_principals),
        ("namespaces", &src.namespaces),
        ("notNamespaces", &src.not_namespaces),
    ] {
        check_wildcards(values, &path.field(name), out);
    }
    if !src.request_principals.is_empty() || !src.not_request_principals.is_empty() {
        out.push(
            Finding::warning(
                path.field("requestPrincipals"),
                "request principals come from JWTs (RequestAuthentication), which Tessera does not verify: no request has one",
            )
            .hint("requestPrincipals never match and notRequestPrincipals always do"),
        );
    }
}

/// A principal names a SPIFFE identity without its scheme:
/// `<trust-domain>/ns/<namespace>/sa/<service-account>`.
fn check_principal(v: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    if v == "*" || v.starts_with('*') || v.ends_with('*') {
        return;
    }
    if v.starts_with("spiffe://") {
        out.push(
            Finding::warning(
                path.clone(),
                format!("principal {v:?} starts with spiffe://, which principals do not: it matches no identity"),
            )
            .hint(format!("write {:?}", v.trim_start_matches("spiffe://"))),
        );
        return;
    }
    let parts: Vec<&str> = v.split('/').collect();
    let well_formed = matches!(parts.as_slice(), [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty());
    if !well_formed {
        out.push(
            Finding::warning(
                path.clone(),
                format!("principal {v:?} is not of the form <trust-domain>/ns/<namespace>/sa/<service-account>: it matches no mesh identity"),
            )
            .hint("for example cluster.local/ns/default/sa/sleep"),
        );
    }
}

/// `*` works as the whole value, a prefix or a suffix; elsewhere it is a literal star.
fn check_wildcards(values: &[String], path: &FieldPath, out: &mut Vec<Finding>) {
    for (k, v) in values.iter().enumerate() {
        let inner = v.trim_start_matches('*').trim_end_matches('*');
        if inner.contains('*') || (v.len() > 1 && v.starts_with('*') && v.ends_with('*')) {
            out.push(Finding::warning(
                path.index(k),
                format!("{v:?}: `*` matches only as the whole value, a prefix or a suffix; here it is matched literally"),
            ));
        }
    }
}

fn check_operation(op: &Operation, rule: usize, path: &FieldPath, out: &mut Vec<Finding>) {
    let fields: [&[String]; 8] = [
        &op.hosts,
        &op.not_hosts,
        &op.ports,
        &op.not_ports,
        &op.methods,
        &op.not_methods,
        &op.paths,
        &op.not_paths,
    ];
    if fields.iter().all(|f| f.is_empty()) {
        out.push(Finding::error(
            path.clone(),
            format!("`to.operation` must not be empty, found at rule {rule}"),
        ));
    }
    for (name, values) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
        for (k, v) in values.iter().enumerate() {
            if !v.parse::<u16>().is_ok_and(|p| p > 0) {
                out.push(Finding::error(
                    path.field(name).index(k),
                    format!("invalid port {v:?}: a port is a number in 1..65535"),
                ));
            }
        }
    }
    for (name, values) in [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ] {
        check_wildcards(values, &path.field(name), out);
    }
    for (name, values) in [("paths", &op.paths), ("notPaths", &op.not_paths)] {
        for (k, v) in values.iter().enumerate() {
            if !v.starts_with('/') && !v.starts_with('*') {
                out.push(Finding::warning(
                    path.field(name).index(k),
                    format!("path {v:?} does not start with `/`: no request path matches it"),
                ));
            }
        }
    }
}

fn check_condition(c: &Condition, path: &FieldPath, out: &mut Vec<Finding>) {
    if c.key.is_empty() {
        out.push(Finding::error(path.field("key"), "`key` must not be empty"));
        return;
    }
    let Some(key) = ConditionKey::parse(&c.key) else {
        out.push(
            Finding::error(path.field("key"), format!("unknown attribute: {}", c.key)).hint(
                "known keys: source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port, connection.sni, request.headers[NAME], request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[NAME]",
            ),
        );
        return;
    };
    if c.values.is_empty() && c.not_values.is_empty() {
        out.push(Finding::error(
            path.clone(),
            format!(
                "at least one of `values` or `notValues` must be set for key {}",
                c.key
            ),
        ));
    }
    for (name, values) in [("values", &c.values), ("notValues", &c.not_values)] {
        for (k, v) in values.iter().enumerate() {
            let ok = match key {
                ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
                    parse_ip_block(v).is_some()
                }
                ConditionKey::DestinationPort => v.parse::<u16>().is_ok_and(|p| p > 0),
                _ => true,
            };
            if !ok {
                out.push(Finding::error(
                    path.field(name).index(k),
                    format!("invalid `value` for `key` {}: {v:?}", c.key),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(yaml: &str) -> Vec<(String, String, bool)> {
        let text = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo}}\n{yaml}"
        );
        let report = crate::load_str(
            std::path::Path::new("ap.yaml"),
            &text,
            &crate::LoadOptions::default(),
        );
        report
            .problems
            .iter()
            .map(|p| (p.path.to_string(), p.message.clone(), p.is_error()))
            .collect()
    }

    #[test]
    fn istio_admission_rules() {
        let rows: &[(&str, &str, &str, bool)] = &[
            ("spec: {}", "spec", "allows nothing", false),
            ("spec: {action: DENY, rules: [{from: []}]}", "spec.rules[0].from", "`from` must not be empty, found at rule 0", true),
            ("spec: {rules: [{from: [{}]}]}", "spec.rules[0].from[0].source", "`from.source` must not be nil, found at rule 0", true),
            ("spec: {rules: [{from: [{source: {}}]}]}", "spec.rules[0].from[0].source", "`from.source` must not be empty, found at rule 0", true),
            ("spec: {rules: [{to: [{operation: {}}]}]}", "spec.rules[0].to[0].operation", "`to.operation` must not be empty, found at rule 0", true),
            ("spec: {rules: [{to: [{operation: {ports: ['http']}}]}]}", "spec.rules[0].to[0].operation.ports[0]", "invalid port \"http\"", true),
            ("spec: {rules: [{from: [{source: {ipBlocks: ['10.0.0.0/33']}}]}]}", "spec.rules[0].from[0].source.ipBlocks[0]", "invalid IP address or CIDR range: 10.0.0.0/33", true),
            ("spec: {rules: [{when: [{key: 'request.header[x]', values: [a]}]}]}", "spec.rules[0].when[0].key", "unknown attribute: request.header[x]", true),
            ("spec: {rules: [{when: [{key: source.ip}]}]}", "spec.rules[0].when[0]", "at least one of `values` or `notValues` must be set for key source.ip", true),
            ("spec: {rules: [{when: [{key: destination.port, values: ['x']}]}]}", "spec.rules[0].when[0].values[0]", "invalid `value` for `key` destination.port", true),
            ("spec: {action: CUSTOM, rules: [{}]}", "spec.provider", "must specify provider when using CUSTOM action", true),
            ("spec: {action: CUSTOM, provider: {name: ext}, rules: [{}]}", "spec.action", "CUSTOM action (an external authorizer) is not supported", true),
            ("spec: {provider: {name: ext}, rules: [{}]}", "spec.provider", "provider is only allowed when using CUSTOM action", true),
            ("spec: {selector: {matchLabels: {app: a}}, targetRefs: [{kind: Gateway, name: g}], rules: [{}]}", "spec", "only one of targetRefs or workload selector can be set", true),
            ("spec: {rules: [{from: [{source: {principals: [sleep]}}]}]}", "spec.rules[0].from[0].source.principals[0]", "is not of the form <trust-domain>/ns/<namespace>/sa/<service-account>", false),
            ("spec: {rules: [{from: [{source: {principals: ['spiffe://cluster.local/ns/a/sa/b']}}]}]}", "spec.rules[0].from[0].source.principals[0]", "starts with spiffe://", false),
            ("spec: {rules: [{to: [{operation: {paths: ['/a*b']}}]}]}", "spec.rules[0].to[0].operation.paths[0]", "`*` matches only as the whole value, a prefix or a suffix", false),
            ("spec: {action: MAYBE}", "spec.action", "MAYBE", true),
        ];
        for (yaml, path, message, error) in rows {
            let got = findings(yaml);
            assert!(
                got.iter()
                    .any(|(p, m, e)| p == path && m.contains(message) && e == error),
                "{yaml}: want {path}: {message} (error {error}); got {got:?}"
            );
        }
        // Istio's own examples are clean.
        for yaml in [
            "spec: {selector: {matchLabels: {app: httpbin}}, action: ALLOW, rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}, {source: {namespaces: [dev]}}], to: [{operation: {methods: [GET], paths: ['/info*']}}], when: [{key: 'request.auth.claims[iss]', values: ['https://accounts.google.com']}]}]}",
            "spec: {action: DENY, rules: [{from: [{source: {notNamespaces: [foo]}}]}]}",
            "spec: {rules: [{}]}",
            "spec: {rules: [{to: [{operation: {ports: ['9000'], notPaths: ['/healthz']}}], when: [{key: 'request.headers[version]', values: [v1, v2]}, {key: source.ip, values: [10.1.2.3, 10.2.0.0/16]}]}]}",
        ] {
            assert_eq!(findings(yaml), vec![], "{yaml}");
        }
    }

    #[test]
    fn condition_keys() {
        assert_eq!(
            ConditionKey::parse("request.headers[X-Token]"),
            Some(ConditionKey::RequestHeader("x-token".into()))
        );
        assert_eq!(
            ConditionKey::parse("request.auth.claims[groups][0]"),
            Some(ConditionKey::RequestAuthClaims(vec![
                "groups".into(),
                "0".into()
            ]))
        );
        assert_eq!(ConditionKey::parse("request.headers[]"), None);
        assert_eq!(ConditionKey::parse("source.name"), None);
        assert!(ConditionKey::parse("request.headers[a]")
            .unwrap()
            .is_http_only());
        assert!(!ConditionKey::parse("connection.sni")
            .unwrap()
            .is_http_only());
        assert_eq!(
            parse_ip_block("10.0.0.1"),
            Some(("10.0.0.1".parse().unwrap(), 32))
        );
        assert_eq!(
            parse_ip_block("fd00::/8"),
            Some(("fd00::".parse().unwrap(), 8))
        );
        assert_eq!(parse_ip_block("10.0.0.1/"), None);
    }
}
