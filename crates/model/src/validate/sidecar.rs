//! Sidecar: ingress listeners (ports, default endpoints, TLS).

use std::collections::BTreeSet;

use super::server_tls::{check_server_tls_files, mode_name};
use super::*;
use crate::istio::{ServerTlsMode, Sidecar};
use crate::problem::Finding;

pub(super) fn check_sidecar(sc: &Sidecar, out: &mut Vec<Finding>) {
    let spec = p("spec");
    let mut ports = BTreeSet::new();
    for (i, l) in sc.spec.ingress.iter().enumerate() {
        let path = spec.field("ingress").index(i);
        check_port_number(
            i64::from(l.port.number),
            &path.field("port").field("number"),
            out,
        );
        if !ports.insert(l.port.number) {
            out.push(Finding::error(
                path.field("port").field("number"),
                format!(
                    "sidecar: ports on ingress listeners must be unique: duplicate {}",
                    l.port.number
                ),
            ));
        }
        if l.port.protocol.is_empty() {
            out.push(Finding::error(
                path.field("port").field("protocol"),
                "missing required field \"protocol\"",
            ));
        } else {
            check_protocol(&l.port.protocol, &path.field("port").field("protocol"), out);
        }
        if let Some(ep) = &l.default_endpoint {
            if !valid_default_endpoint(ep) {
                out.push(Finding::error(path.field("defaultEndpoint"), format!("\"{ep}\" is not an allowed default endpoint; use 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path")));
            }
        }
        if let Some(tls) = &l.tls {
            let tpath = path.field("tls");
            let proto = l.port.protocol.to_ascii_uppercase();
            if proto != "HTTPS" && proto != "TLS" {
                out.push(
                    Finding::error(tpath.clone(), format!("server cannot have TLS settings for non HTTPS/TLS ports (port {} is {})", l.port.number, if l.port.protocol.is_empty() { "unset" } else { &l.port.protocol }))
                        .hint(format!("set {} to HTTPS", path.field("port").field("protocol"))),
                );
            }
            let mode = tls.effective_mode();
            if matches!(
                mode,
                ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
            ) {
                out.push(Finding::error(tpath.field("mode"), format!("configuration is invalid: cannot set mode to {} in sidecar ingress tls", mode_name(mode))).hint("use SIMPLE or MUTUAL"));
            }
            if tls.https_redirect {
                out.push(Finding::error(
                    tpath.field("httpsRedirect"),
                    "sidecar: httpsRedirect is not supported",
                ));
            }
            if tls.credential_name.is_some() {
                out.push(Finding::error(tpath.field("credentialName"), "sidecar: credentialName is not currently supported").hint("mount the Secret with the sidecar.istio.io/userVolume and userVolumeMount annotations and give file paths"));
            }
            if !tls.credential_names.is_empty() {
                out.push(Finding::error(
                    tpath.field("credentialNames"),
                    "sidecar: credentialNames is not currently supported",
                ));
            }
            if tls.tls_certificates.is_some() {
                out.push(Finding::error(
                    tpath.field("tlsCertificates"),
                    "sidecar: tls_certificates is not currently supported",
                ));
            }
            if !tls.subject_alt_names.is_empty() {
                out.push(Finding::error(
                    tpath.field("subjectAltNames"),
                    "sidecar: subjectAltNames is not supported in ingress tls",
                ));
            }
            if tls.credential_name.is_none()
                && tls.credential_names.is_empty()
                && tls.tls_certificates.is_none()
            {
                check_server_tls_files(tls, &tpath, out);
            }
        }
    }
}

pub(super) fn valid_default_endpoint(ep: &str) -> bool {
    if let Some(path) = ep.strip_prefix("unix://") {
        return path.starts_with('/');
    }
    ["127.0.0.1:", "0.0.0.0:", "[::1]:", "[::]:"]
        .iter()
        .any(|prefix| {
            ep.strip_prefix(prefix)
                .and_then(|port| port.parse::<u16>().ok())
                .is_some_and(|p| p > 0)
        })
}
