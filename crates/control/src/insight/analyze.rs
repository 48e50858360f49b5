//! `tessera analyze`: configuration that is ignored or that contradicts itself, each
//! finding naming the resource and a fix. The checks read the compiled world (merged
//! effective policy per port), not pairs of objects, so a finding is what the proxies
//! will actually do.

use std::collections::BTreeMap;

use crate::insight::reach::matrix;
use crate::insight::verdict::{ClientSends, ServerTakes};
use crate::world::World;

pub use crate::insight::finding::{code, Finding, Level};

/// Every finding, errors first, then by resource.
pub fn analyze(world: &World) -> Vec<Finding> {
    let mut out = Vec::new();
    for (policy, why) in &world.problems {
        out.push(Finding {
            level: Level::Warning,
            code: code::POLICY_IGNORED.into(),
            resource: policy.to_string(),
            message: why.clone(),
            fix: policy_fix(why, &world.options.root_namespace),
        });
    }
    out.extend(tls_conflicts(world));
    for (source, workload, why) in crate::compile::ignored_tls(world) {
        let fix = if why.contains("ENABLE_TLS_ON_SIDECAR_INGRESS") {
            "install with --set values.pilot.env.ENABLE_TLS_ON_SIDECAR_INGRESS=true".to_string()
        } else if why.contains("portLevelMtls") {
            "add a PeerAuthentication selecting the workload with portLevelMtls DISABLE for that port".to_string()
        } else {
            "correct the listener's tls files and mode".to_string()
        };
        out.push(Finding {
            level: Level::Warning,
            code: code::INGRESS_TLS_IGNORED.into(),
            resource: source,
            message: format!("tls is ignored on {workload}: {why}"),
            fix,
        });
    }
    for gw in world.registry.workloads.iter().filter(|w| w.is_gateway) {
        for note in crate::compile::compile_gateway(world, gw).notes {
            let (resource, message) = match note.split_once(" skipped: ") {
                Some((source, why)) => {
                    (source.to_string(), format!("skipped on {}: {why}", gw.id()))
                }
                None => match note.split_once(": ") {
                    Some((source, why)) => (source.to_string(), format!("on {}: {why}", gw.id())),
                    None => (format!("gateway {}", gw.id()), note.clone()),
                },
            };
            out.push(Finding {
                level: Level::Warning,
                code: code::GATEWAY_SERVER_SKIPPED.into(),
                resource,
                message,
                fix: "correct the server as the message says; until then its port serves the other servers only".into(),
            });
        }
    }
    out.extend(shadowed_routes(world));
    out.extend(crate::insight::authz::findings(world));
    out.sort();
    out.dedup();
    out
}

/// VirtualService routes and matches that an earlier route always takes first: a warning
/// for a route that is never used, information for a single repeated match.
fn shadowed_routes(world: &World) -> Vec<Finding> {
    let mut out = Vec::new();
    for vs in &world.virtual_services {
        for s in crate::insight::shadow::shadowed(&vs.spec) {
            out.push(Finding {
                level: if s.route_unused {
                    Level::Warning
                } else {
                    Level::Info
                },
                code: code::SHADOWED_ROUTE.into(),
                resource: format!("VirtualService {}/{}", vs.namespace, vs.name),
                message: s.message,
                fix: s.fix,
            });
        }
    }
    out
}

/// DestinationRules whose client TLS the server cannot take, found from the matrix
/// itself: one finding per rule, service port and endpoint.
fn tls_conflicts(world: &World) -> Vec<Finding> {
    let mut grouped: BTreeMap<(String, String, String), (Finding, Vec<String>)> = BTreeMap::new();
    for reach in matrix(world, &[]) {
        for e in &reach.endpoints {
            if e.verdict.works() {
                continue;
            }
            let Some(rule) = e
                .decided_by
                .iter()
                .find(|d| d.starts_with("DestinationRule"))
            else {
                continue;
            };
            let server_policy: Vec<&str> = e
                .decided_by
                .iter()
                .filter(|d| !d.starts_with("DestinationRule"))
                .map(String::as_str)
                .collect();
            let by = if server_policy.is_empty() {
                String::new()
            } else {
                format!(", decided by {}", server_policy.join(", "))
            };
            let (code, message) = match (e.client_sends, e.server_takes) {
                (ClientSends::MeshMtls, ServerTakes::Disable | ServerTakes::NoSidecar) => (
                    code::MTLS_TO_PLAINTEXT,
                    format!(
                        "sends mTLS (ISTIO_MUTUAL) to {}, but port {} of {} takes {}{by}; requests get {}",
                        reach.target(),
                        e.target_port,
                        e.workload,
                        e.server_takes.label(),
                        e.verdict
                    ),
                ),
                (ClientSends::Plaintext | ClientSends::UserTls, ServerTakes::Strict) => (
                    code::PLAINTEXT_TO_STRICT,
                    format!(
                        "sends {} to {}, but port {} of {} is STRICT{by}; requests get {}",
                        e.client_sends.label(),
                        reach.target(),
                        e.target_port,
                        e.workload,
                        e.verdict
                    ),
                ),
                (ClientSends::UserTls, _) => (
                    code::USER_TLS_NOT_TERMINATED,
                    format!(
                        "sends {} to {}, but port {} of {} does not terminate it: {}{by}; requests get {}",
                        e.client_sends.label(),
                        reach.target(),
                        e.target_port,
                        e.workload,
                        e.why,
                        e.verdict
                    ),
                ),
                _ => continue,
            };
            let key = (rule.clone(), reach.target(), e.workload.clone());
            let entry = grouped.entry(key).or_insert_with(|| {
                (
                    Finding {
                        level: Level::Error,
                        code: code.into(),
                        resource: rule.clone(),
                        message,
                        fix: e.fix.clone(),
                    },
                    Vec::new(),
                )
            });
            entry.1.push(reach.client.clone());
        }
    }
    grouped
        .into_values()
        .map(|(mut f, clients)| {
            f.message
                .push_str(&format!(" (clients: {})", clients.join(", ")));
            f
        })
        .collect()
}

/// The fix for a policy the compiler reports as ignored.
fn policy_fix(why: &str, root: &str) -> String {
    if why.contains("only the oldest") {
        "delete the younger policy, or merge what it says into the one that applies".into()
    } else if why.contains("selector policies in the root namespace") {
        format!("move it to the workloads' namespace, or remove the selector to make it mesh-wide (selectors in {root} are ignored)")
    } else if why.contains("portLevelMtls") {
        "add a selector naming the workloads whose ports it means: port-level modes need a workload policy".into()
    } else if why.contains("does not exist") || why.contains("no pod selector") {
        "point the target at an existing Service with a pod selector".into()
    } else if why.contains("selects every workload") {
        "narrow the older policy's selector, or merge this one into it".into()
    } else {
        "correct the policy as the message says, or delete it".into()
    }
}
