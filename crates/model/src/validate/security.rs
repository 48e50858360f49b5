//! `security.istio.io` PeerAuthentication and the legacy `authentication.istio.io`
//! Policy and MeshPolicy, with Istio's admission rules and wording.

use super::*;

use crate::istio::{LegacyPolicySpec, LegacyTargetSelector, PeerAuthentication};
use crate::meta::ObjectMeta;
use crate::problem::{FieldPath, Finding};

pub(super) fn check_peer_authentication(
    pa: &PeerAuthentication,
    opts: &ValidateOptions,
    out: &mut Vec<Finding>,
) {
    let spec = p("spec");
    let has_selector = pa
        .spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if let Some(ports) = &pa.spec.port_level_mtls {
        let path = spec.field("portLevelMtls");
        if !has_selector {
            out.push(
                Finding::error(path.clone(), "mesh/namespace peer authentication cannot have port level mTLS")
                    .hint("portLevelMtls requires selector: add spec.selector.matchLabels naming the workloads, or move the port setting to a workload policy"),
            );
        }
        if ports.is_empty() {
            out.push(Finding::error(
                path.clone(),
                "port level mTLS must have at least one element",
            ));
        }
        for port in ports.keys() {
            if !(1..=65535).contains(port) {
                out.push(Finding::error(
                    path.key(&port.to_string()),
                    format!("port {port} must be in range 1..65535"),
                ));
            }
        }
    }
    if has_selector && pa.metadata.namespace.as_deref() == Some(opts.root_namespace.as_str()) {
        out.push(
            Finding::warning(
                spec.field("selector"),
                format!(
                    "a PeerAuthentication with a selector in the root namespace {} is ignored",
                    opts.root_namespace
                ),
            )
            .hint(
                "put it in the workload's namespace, or remove the selector to make it mesh-wide",
            ),
        );
    }
    if let Some(sel) = &pa.spec.selector {
        check_labels(
            &sel.match_labels,
            &spec.field("selector").field("matchLabels"),
            out,
        );
    }
}

/// Istio 1.4's admission checks for a v1alpha1 `Policy` (`is_mesh_policy` false) or
/// `MeshPolicy`, with its texts byte for byte (including the double space in the first
/// one). A target port names a number, else a name; one with neither is reported by
/// [`validate`] itself. The control plane skips policies that fail these.
pub fn legacy_policy_errors(
    name: &str,
    is_mesh_policy: bool,
    targets: &[LegacyTargetSelector],
) -> Vec<(FieldPath, String)> {
    let mut errs = Vec::new();
    if is_mesh_policy {
        if name != LEGACY_DEFAULT_NAME {
            errs.push((
                FieldPath::parse("metadata.name"),
                format!(
                    "cluster-scoped authentication policy name must be {LEGACY_DEFAULT_NAME:?}, found {name:?}"
                ),
            ));
        }
        if !targets.is_empty() {
            errs.push((
                FieldPath::parse("spec.targets"),
                "cluster-scoped authentication policy must not have targets".to_string(),
            ));
        }
        return errs;
    }
    if targets.is_empty() && name != LEGACY_DEFAULT_NAME {
        errs.push((
            FieldPath::parse("metadata.name"),
            format!(
                "authentication policy with no target rules  must be named {LEGACY_DEFAULT_NAME:?}, found {name:?}"
            ),
        ));
    }
    if !targets.is_empty() && name == LEGACY_DEFAULT_NAME {
        errs.push((
            FieldPath::parse("spec.targets"),
            format!("authentication policy with name {name:?} must not have any target rules"),
        ));
    }
    let is_label = |s: &str| crate::meta::validate_dns_label(s).is_ok();
    for (i, t) in targets.iter().enumerate() {
        let target = FieldPath::parse("spec.targets").index(i);
        if !is_label(&t.name) {
            errs.push((
                target.field("name"),
                format!("target name {:?} must be a valid label", t.name),
            ));
        }
        for (j, sel) in t.ports.iter().enumerate() {
            let port = target.field("ports").index(j);
            match (sel.number, sel.name.as_deref()) {
                (Some(n), _) if n == 0 || n > 65535 => {
                    errs.push((
                        port.field("number"),
                        format!("port number {n} must be in the range 1..65535"),
                    ));
                }
                (Some(_), _) => {}
                // 1.4 reused the DestinationRule subset-name check here, hence the wording.
                (None, Some("")) => {
                    errs.push((
                        port.field("name"),
                        "subset name cannot be empty".to_string(),
                    ));
                }
                (None, Some(n)) if !is_label(n) => {
                    errs.push((port.field("name"), format!("subset name is invalid: {n}")));
                }
                _ => {}
            }
        }
    }
    errs
}

pub(super) const LEGACY_DEFAULT_NAME: &str = "default";

pub(super) fn check_legacy_policy(
    meta: &ObjectMeta,
    spec: &LegacyPolicySpec,
    mesh: bool,
    out: &mut Vec<Finding>,
) {
    for (path, message) in legacy_policy_errors(&meta.name, mesh, &spec.targets) {
        let mut f = Finding::error(path, message);
        if !mesh && spec.targets.is_empty() {
            f = f.hint("name it \"default\" to apply to the whole namespace, or add spec.targets");
        }
        out.push(f);
    }
    for (i, t) in spec.targets.iter().enumerate() {
        for (j, port) in t.ports.iter().enumerate() {
            if port.number.is_none() && port.name.is_none() {
                out.push(Finding::error(
                    p("spec.targets").index(i).field("ports").index(j),
                    "a port selector needs `number` or `name`",
                ));
            }
        }
    }
    for (i, peer) in spec.peers.iter().enumerate() {
        if peer.mtls.is_none() && peer.jwt.is_none() {
            out.push(Finding::error(
                p("spec.peers").index(i),
                "a peer method needs `mtls` (or `jwt`)",
            ));
        }
    }
}
