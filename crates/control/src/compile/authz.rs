//! The authorization pass: the AuthorizationPolicies that apply to a workload, compiled
//! into the matchers its proxy evaluates (`tessera_contract::authz`). A policy applies to
//! the workloads of its namespace that its selector picks (all of them without one); in
//! the root namespace, to the picked workloads of every namespace. Policies with
//! `targetRefs` name Gateway API resources, which this mesh does not have: they apply to
//! no workload.

use tessera_contract::authz::{
    Attribute, Authorization, AuthzAction, AuthzPolicy, AuthzRule, Cidr, ConditionMatch,
    ConditionValue, OperationMatch, SourceMatch, StrMatch,
};
use tessera_model::istio::{
    AuthorizationAction, AuthorizationPolicySpec, Condition, Operation, Source,
};
use tessera_model::meta::subset;
use tessera_model::validate::{parse_ip_block, ConditionKey};

use crate::registry::WorkloadEntry;
use crate::world::{AuthorizationRule, World};

/// Whether `rule` applies to `w`.
pub(crate) fn applies(rule: &AuthorizationRule, w: &WorkloadEntry, root: &str) -> bool {
    if rule.targets_resources {
        return false;
    }
    let in_scope = rule.namespace == root || rule.namespace == w.namespace;
    in_scope && rule.selector.as_ref().is_none_or(|s| subset(s, &w.labels))
}

/// The compiled policies of `w`, in the order of their namespaces and names.
pub(super) fn authorization(world: &World, w: &WorkloadEntry) -> Authorization {
    let root = world.options.root_namespace.as_str();
    Authorization {
        policies: world
            .authorization
            .iter()
            .filter(|r| applies(r, w, root))
            .filter_map(|r| compile_policy(&format!("{}/{}", r.namespace, r.name), &r.spec))
            .collect(),
    }
}

/// One policy's matchers; `None` for a CUSTOM one (refused by validation).
pub fn compile_policy(name: &str, spec: &AuthorizationPolicySpec) -> Option<AuthzPolicy> {
    let action = match spec.action {
        AuthorizationAction::Allow => AuthzAction::Allow,
        AuthorizationAction::Deny => AuthzAction::Deny,
        AuthorizationAction::Audit => AuthzAction::Audit,
        AuthorizationAction::Custom => return None,
    };
    let rules = spec
        .rules
        .iter()
        .map(|r| AuthzRule {
            from: r.from.as_ref().map(|list| {
                list.iter()
                    .filter_map(|f| f.source.as_ref())
                    .map(source)
                    .collect()
            }),
            to: r.to.as_ref().map(|list| {
                list.iter()
                    .filter_map(|t| t.operation.as_ref())
                    .map(operation)
                    .collect()
            }),
            when: r.when.iter().flatten().filter_map(condition).collect(),
        })
        .collect();
    Some(AuthzPolicy {
        name: name.to_string(),
        action,
        rules,
    })
}

fn patterns(values: &[String]) -> Vec<StrMatch> {
    values.iter().map(|v| StrMatch::parse(v)).collect()
}

fn cidrs(values: &[String]) -> Vec<Cidr> {
    values
        .iter()
        .filter_map(|v| parse_ip_block(v))
        .map(|(addr, len)| Cidr { addr, len })
        .collect()
}

fn ports(values: &[String]) -> Vec<u16> {
    values.iter().filter_map(|v| v.parse().ok()).collect()
}

fn source(s: &Source) -> SourceMatch {
    SourceMatch {
        principals: patterns(&s.principals),
        not_principals: patterns(&s.not_principals),
        request_principals: patterns(&s.request_principals),
        not_request_principals: patterns(&s.not_request_principals),
        namespaces: patterns(&s.namespaces),
        not_namespaces: patterns(&s.not_namespaces),
        ip_blocks: cidrs(&s.ip_blocks),
        not_ip_blocks: cidrs(&s.not_ip_blocks),
        remote_ip_blocks: cidrs(&s.remote_ip_blocks),
        not_remote_ip_blocks: cidrs(&s.not_remote_ip_blocks),
    }
}

fn operation(o: &Operation) -> OperationMatch {
    OperationMatch {
        hosts: patterns(&o.hosts),
        not_hosts: patterns(&o.not_hosts),
        ports: ports(&o.ports),
        not_ports: ports(&o.not_ports),
        methods: patterns(&o.methods),
        not_methods: patterns(&o.not_methods),
        paths: patterns(&o.paths),
        not_paths: patterns(&o.not_paths),
    }
}

fn condition(c: &Condition) -> Option<ConditionMatch> {
    let key = ConditionKey::parse(&c.key)?;
    let attribute = match &key {
        ConditionKey::SourceIp => Attribute::SourceIp,
        ConditionKey::RemoteIp => Attribute::RemoteIp,
        ConditionKey::SourceNamespace => Attribute::SourceNamespace,
        ConditionKey::SourcePrincipal => Attribute::SourcePrincipal,
        ConditionKey::DestinationIp => Attribute::DestinationIp,
        ConditionKey::DestinationPort => Attribute::DestinationPort,
        ConditionKey::ConnectionSni => Attribute::ConnectionSni,
        ConditionKey::RequestHeader(name) => Attribute::RequestHeader(name.clone()),
        ConditionKey::RequestAuthPrincipal
        | ConditionKey::RequestAuthAudiences
        | ConditionKey::RequestAuthPresenter
        | ConditionKey::RequestAuthClaims(_) => Attribute::RequestAuth(c.key.clone()),
    };
    let value = |v: &String| -> Option<ConditionValue> {
        Some(match attribute {
            Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
                let (addr, len) = parse_ip_block(v)?;
                ConditionValue::Ip(Cidr { addr, len })
            }
            Attribute::DestinationPort => ConditionValue::Port(v.parse().ok()?),
            _ => ConditionValue::Str(StrMatch::parse(v)),
        })
    };
    Some(ConditionMatch {
        values: c.values.iter().filter_map(value).collect(),
        not_values: c.not_values.iter().filter_map(value).collect(),
        key: attribute,
    })
}
