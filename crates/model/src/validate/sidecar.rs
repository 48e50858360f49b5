//! Sidecar: ingress listeners (ports, default endpoints, TLS, connection pools) and the
//! outbound traffic policy.

use std::collections::BTreeSet;

use super::connection_pool::check_connection_pool;
use super::server_tls::{check_server_tls_files, mode_name};
use super::values::{check_destination, validate_fqdn, validate_wildcard_domain};
use super::*;
use crate::istio::{
    IstioEgressListener, IstioIngressListener, OutboundMode, OutboundTrafficPolicy, ServerTlsMode,
    ServerTlsSettings, Sidecar,
};
use crate::problem::{FieldPath, Finding};

pub(super) fn check_sidecar(sc: &Sidecar, out: &mut Vec<Finding>) {
    let spec = p("spec");
    if sc.spec.ingress.is_empty()
        && sc.spec.egress.is_empty()
        && sc.spec.outbound_traffic_policy.is_none()
        && sc.spec.inbound_connection_pool.is_none()
    {
        out.push(
            Finding::error(spec.clone(), "sidecar: empty configuration provided")
                .hint("set ingress, egress, outboundTrafficPolicy or inboundConnectionPool"),
        );
    }
    let mut ports = BTreeSet::new();
    for (i, l) in sc.spec.ingress.iter().enumerate() {
        let path = spec.field("ingress").index(i);
        if !ports.insert(l.port.number) {
            out.push(Finding::error(
                path.field("port").field("number"),
                format!(
                    "sidecar: ports on ingress listeners must be unique: duplicate {}",
                    l.port.number
                ),
            ));
        }
        check_ingress(l, &path, out);
    }
    check_egress(&sc.spec.egress, &spec.field("egress"), out);
    if let Some(pool) = &sc.spec.inbound_connection_pool {
        check_connection_pool(pool, &spec.field("inboundConnectionPool"), out);
    }
    if let Some(policy) = &sc.spec.outbound_traffic_policy {
        check_outbound_policy(policy, &spec.field("outboundTrafficPolicy"), out);
    }
}

/// An ingress listener. Its port needs no protocol: without one the sidecar detects it,
/// as for a Service port without a protocol name.
fn check_ingress(l: &IstioIngressListener, path: &FieldPath, out: &mut Vec<Finding>) {
    check_port_number(
        i64::from(l.port.number),
        &path.field("port").field("number"),
        out,
    );
    if !l.port.protocol.is_empty() {
        check_protocol(&l.port.protocol, &path.field("port").field("protocol"), out);
    }
    if let Some(ep) = &l.default_endpoint {
        if !valid_default_endpoint(ep) {
            out.push(Finding::error(path.field("defaultEndpoint"), format!("\"{ep}\" is not an allowed default endpoint; use 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path")));
        }
    }
    if let Some(tls) = &l.tls {
        check_ingress_tls(l, tls, path, out);
    }
    if let Some(pool) = &l.connection_pool {
        let cpath = path.field("connectionPool");
        check_connection_pool(pool, &cpath, out);
        let http_port = matches!(
            l.port.protocol.to_ascii_uppercase().as_str(),
            "HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-WEB"
        );
        if pool.http.is_some() && !http_port {
            out.push(Finding::warning(
                cpath.field("http"),
                format!(
                    "sidecar: HTTP connection pool settings are configured for port {} ({:?}) but its protocol is not HTTP ({}); only TCP settings will apply",
                    l.port.number, l.port.name, l.port.protocol
                ),
            ));
        }
    }
}

fn check_ingress_tls(
    l: &IstioIngressListener,
    tls: &ServerTlsSettings,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    let tpath = path.field("tls");
    let proto = l.port.protocol.to_ascii_uppercase();
    if proto != "HTTPS" && proto != "TLS" {
        out.push(
            Finding::error(
                tpath.clone(),
                format!(
                    "server cannot have TLS settings for non HTTPS/TLS ports (port {} is {})",
                    l.port.number,
                    if l.port.protocol.is_empty() {
                        "unset"
                    } else {
                        &l.port.protocol
                    }
                ),
            )
            .hint(format!(
                "set {} to HTTPS",
                path.field("port").field("protocol")
            )),
        );
    }
    let mode = tls.effective_mode();
    if matches!(
        mode,
        ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
    ) {
        out.push(
            Finding::error(
                tpath.field("mode"),
                format!(
                    "configuration is invalid: cannot set mode to {} in sidecar ingress tls",
                    mode_name(mode)
                ),
            )
            .hint("use SIMPLE or MUTUAL"),
        );
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

/// Egress listeners: at most one without a port, and last; unique ports; at least one host
/// each, every host `namespace/dnsName`.
fn check_egress(egress: &[IstioEgressListener], path: &FieldPath, out: &mut Vec<Finding>) {
    let mut ports = BTreeSet::new();
    let mut catch_all = false;
    for (i, l) in egress.iter().enumerate() {
        let lpath = path.index(i);
        match &l.port {
            None if catch_all => out.push(Finding::error(
                lpath.clone(),
                "sidecar: egress can have only one listener with empty port",
            )),
            None if i + 1 != egress.len() => out.push(Finding::error(
                lpath.clone(),
                "sidecar: the egress listener with empty port should be the last listener in the list",
            )),
            None => catch_all = true,
            Some(port) => {
                let ppath = lpath.field("port");
                check_port_number(i64::from(port.number), &ppath.field("number"), out);
                if !port.protocol.is_empty() {
                    check_protocol(&port.protocol, &ppath.field("protocol"), out);
                }
                if !ports.insert(port.number) {
                    out.push(Finding::error(
                        ppath.field("number"),
                        "sidecar: ports on IP bound listeners must be unique",
                    ));
                }
            }
        }
        if l.hosts.is_empty() {
            out.push(
                Finding::error(
                    lpath.field("hosts"),
                    "sidecar: egress listener must contain at least one host",
                )
                .hint("e.g. hosts: [\"./*\", \"istio-system/*\"]"),
            );
        }
        for (j, host) in l.hosts.iter().enumerate() {
            if let Err(e) = egress_host(host) {
                out.push(Finding::error(lpath.field("hosts").index(j), e));
            }
        }
    }
}

/// `namespace/dnsName`: the namespace `*`, `.`, `~` or a DNS label; the name `*` or a
/// (wildcard) FQDN.
fn egress_host(host: &str) -> Result<(), String> {
    let Some((ns, dns)) = host.split_once('/') else {
        return Err("host must be of form namespace/dnsName".into());
    };
    if ns.is_empty() || dns.is_empty() {
        return Err("config namespace and dnsName in host entry cannot be empty".into());
    }
    if !matches!(ns, "*" | "." | "~") && validate_dns_label(ns).is_err() {
        return Err(format!("invalid namespace value {ns:?} in sidecar"));
    }
    if dns != "*" && !dns.contains('.') {
        return Err("short names (non FQDN) are not allowed".into());
    }
    validate_wildcard_domain(dns)
}

/// `mode` ALLOW_ANY may send unknown hosts through `egressProxy`, a host and port.
fn check_outbound_policy(policy: &OutboundTrafficPolicy, path: &FieldPath, out: &mut Vec<Finding>) {
    let Some(proxy) = &policy.egress_proxy else {
        return;
    };
    let ppath = path.field("egressProxy");
    if policy.mode != Some(OutboundMode::AllowAny) {
        out.push(
            Finding::error(
                ppath,
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            )
            .hint("set outboundTrafficPolicy.mode: ALLOW_ANY"),
        );
        return;
    }
    // Not a wildcard either (which the destination check below would report).
    if validate_wildcard_domain(&proxy.host).is_ok() {
        if let Err(e) = validate_fqdn(&proxy.host) {
            out.push(Finding::error(ppath.field("host"), e));
        }
    }
    if proxy.port.is_none() {
        out.push(
            Finding::error(
                ppath.field("port"),
                "sidecar: egress_proxy port must be non-nil",
            )
            .hint("add port: {number: PORT}"),
        );
        return;
    }
    check_destination(proxy, &ppath, out);
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
