//! `networking.istio.io`: DestinationRule, Sidecar, Gateway and VirtualService.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

use crate::istio::{
    ClientTlsMode, ClientTlsSettings, DestinationRule, Gateway, HttpRoute, ServerTlsMode,
    ServerTlsSettings, Sidecar, StringMatch, VirtualService,
};
use crate::problem::{FieldPath, Finding};

pub(super) fn check_client_tls(tls: &ClientTlsSettings, path: &FieldPath, out: &mut Vec<Finding>) {
    let has_files = tls.client_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some();
    match tls.mode {
        ClientTlsMode::IstioMutual => {
            for (field, set) in [
                ("clientCertificate", tls.client_certificate.is_some()),
                ("privateKey", tls.private_key.is_some()),
                ("caCertificates", tls.ca_certificates.is_some()),
                ("credentialName", tls.credential_name.is_some()),
            ] {
                if set {
                    out.push(Finding::error(
                        path.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {field}: the mesh certificates are used"),
                    ));
                }
            }
        }
        ClientTlsMode::Mutual if tls.credential_name.is_none() => {
            if tls.client_certificate.is_none() {
                out.push(
                    Finding::error(
                        path.field("clientCertificate"),
                        "client certificate required for mutual tls",
                    )
                    .hint("or set credentialName"),
                );
            }
            if tls.private_key.is_none() {
                out.push(
                    Finding::error(
                        path.field("privateKey"),
                        "private key required for mutual tls",
                    )
                    .hint("or set credentialName"),
                );
            }
        }
        ClientTlsMode::Disable if has_files || tls.credential_name.is_some() => {
            out.push(Finding::warning(
                path.field("mode"),
                "certificates are ignored when mode is DISABLE",
            ));
        }
        _ => {}
    }
}

pub(super) fn check_destination_rule(dr: &DestinationRule, out: &mut Vec<Finding>) {
    let spec = p("spec");
    if dr.spec.host.is_empty() {
        out.push(
            Finding::error(spec.field("host"), "missing required field \"host\"")
                .hint("the service name, e.g. httpbin.full.svc.cluster.local"),
        );
    }
    let check_policy =
        |tp: &crate::istio::TrafficPolicy, path: FieldPath, out: &mut Vec<Finding>| {
            if let Some(tls) = &tp.tls {
                check_client_tls(tls, &path.field("tls"), out);
            }
            for (i, pl) in tp.port_level_settings.iter().enumerate() {
                let ppath = path.field("portLevelSettings").index(i);
                match &pl.port {
                    None => out.push(Finding::error(
                        ppath.field("port"),
                        "port must be specified",
                    )),
                    Some(port) => check_port_number(
                        i64::from(port.number),
                        &ppath.field("port").field("number"),
                        out,
                    ),
                }
                if let Some(tls) = &pl.tls {
                    check_client_tls(tls, &ppath.field("tls"), out);
                }
            }
        };
    if let Some(tp) = &dr.spec.traffic_policy {
        check_policy(tp, spec.field("trafficPolicy"), out);
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        let path = spec.field("subsets").index(i);
        if s.name.is_empty() {
            out.push(Finding::error(
                path.field("name"),
                "missing required field \"name\"",
            ));
        } else if !names.insert(s.name.as_str()) {
            out.push(Finding::error(
                path.field("name"),
                format!("duplicate subset name \"{}\"", s.name),
            ));
        }
        if let Some(tp) = &s.traffic_policy {
            check_policy(tp, path.field("trafficPolicy"), out);
        }
    }
}

/// TLS checks shared by Gateway servers and Sidecar ingress listeners.
pub(super) fn check_server_tls_files(
    tls: &ServerTlsSettings,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    let mode = tls.effective_mode();
    let credential = tls.credential_name.is_some()
        || !tls.credential_names.is_empty()
        || tls.tls_certificates.is_some();
    match mode {
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !credential {
                let how =
                    "set serverCertificate and privateKey (files), or credentialName (a Secret)";
                if tls.server_certificate.is_none() {
                    out.push(
                        Finding::error(
                            path.field("serverCertificate"),
                            format!("{} TLS requires a server certificate", mode_name(mode)),
                        )
                        .hint(how),
                    );
                }
                if tls.private_key.is_none() {
                    out.push(
                        Finding::error(
                            path.field("privateKey"),
                            format!("{} TLS requires a private key", mode_name(mode)),
                        )
                        .hint(how),
                    );
                }
                if mode != ServerTlsMode::Simple && tls.ca_certificates.is_none() {
                    out.push(
                        Finding::error(
                            path.field("caCertificates"),
                            "MUTUAL TLS requires a client CA bundle",
                        )
                        .hint("set caCertificates to a file of trusted client CA certificates"),
                    );
                }
            }
        }
        ServerTlsMode::IstioMutual => {
            for (field, set) in [
                ("serverCertificate", tls.server_certificate.is_some()),
                ("privateKey", tls.private_key.is_some()),
                ("caCertificates", tls.ca_certificates.is_some()),
                ("credentialName", tls.credential_name.is_some()),
            ] {
                if set {
                    out.push(Finding::error(
                        path.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {field}"),
                    ));
                }
            }
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if tls.server_certificate.is_some()
                || tls.private_key.is_some()
                || tls.ca_certificates.is_some()
                || credential
            {
                out.push(Finding::warning(
                    path.field("mode"),
                    format!(
                        "{} does not terminate TLS: the certificates are ignored",
                        mode_name(mode)
                    ),
                ));
            }
        }
    }
    let sources = [
        tls.credential_name.is_some(),
        !tls.credential_names.is_empty(),
        tls.server_certificate.is_some() || tls.private_key.is_some(),
        tls.tls_certificates.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources > 1 {
        out.push(Finding::error(path.clone(), "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified"));
    }
}

pub(super) fn mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

pub(super) fn check_protocol(protocol: &str, path: &FieldPath, out: &mut Vec<Finding>) {
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

pub(super) fn check_gateway(gw: &Gateway, out: &mut Vec<Finding>) {
    let spec = p("spec");
    if gw.metadata.name.contains('.') {
        out.push(Finding::error(
            p("metadata.name"),
            "invalid gateway name: it must not contain a dot",
        ));
    }
    if gw.spec.servers.is_empty() {
        out.push(Finding::error(
            spec.field("servers"),
            "gateway must have at least one server",
        ));
    }
    let mut port_names = BTreeMap::new();
    for (i, s) in gw.spec.servers.iter().enumerate() {
        let path = spec.field("servers").index(i);
        check_port_number(
            i64::from(s.port.number),
            &path.field("port").field("number"),
            out,
        );
        if s.port.target_port.is_some() {
            out.push(
                Finding::error(
                    path.field("port").field("targetPort"),
                    "targetPort has no impact on Gateways",
                )
                .hint("remove it; the gateway Service maps ports to the gateway pod"),
            );
        }
        if !s.port.name.is_empty() {
            if let Some(first) = port_names.insert(s.port.name.clone(), i) {
                out.push(Finding::error(path.field("port").field("name"), format!("port names in servers must be unique: duplicate name {} (also spec.servers[{first}])", s.port.name)));
            }
        }
        if s.hosts.is_empty() {
            out.push(Finding::error(
                path.field("hosts"),
                "server config must contain at least one host",
            ));
        }
        for (j, h) in s.hosts.iter().enumerate() {
            if h.is_empty() {
                out.push(Finding::error(
                    path.field("hosts").index(j),
                    "host must not be empty",
                ));
            }
        }
        let proto = s.port.protocol.to_ascii_uppercase();
        if s.port.protocol.is_empty() {
            out.push(Finding::error(
                path.field("port").field("protocol"),
                "missing required field \"protocol\"",
            ));
        } else {
            check_protocol(&s.port.protocol, &path.field("port").field("protocol"), out);
        }
        let tpath = path.field("tls");
        match (&s.tls, proto.as_str()) {
            (None, "HTTPS" | "TLS") => out.push(
                Finding::error(
                    tpath,
                    "server must have TLS settings for HTTPS/TLS protocols",
                )
                .hint(
                    "add tls with mode SIMPLE (and serverCertificate/privateKey or credentialName)",
                ),
            ),
            (Some(tls), "HTTP") => {
                let only_redirect = tls.mode.is_none()
                    && tls.server_certificate.is_none()
                    && tls.private_key.is_none()
                    && tls.ca_certificates.is_none()
                    && tls.credential_name.is_none();
                if !only_redirect {
                    out.push(
                        Finding::error(
                            tpath,
                            "server cannot have TLS settings for plain text HTTP ports",
                        )
                        .hint("only tls.httpsRedirect is allowed on an HTTP server"),
                    );
                }
            }
            (Some(tls), "HTTPS" | "TLS") => {
                if tls.https_redirect {
                    out.push(Finding::warning(
                        tpath.field("httpsRedirect"),
                        "tls.httpsRedirect only has an effect on HTTP servers",
                    ));
                }
                check_server_tls_files(tls, &tpath, out);
            }
            (Some(_), p) if !p.is_empty() => out.push(Finding::error(
                tpath,
                "server cannot have TLS settings for non HTTPS/TLS ports",
            )),
            _ => {}
        }
    }
}

pub(super) fn check_virtual_service(vs: &VirtualService, out: &mut Vec<Finding>) {
    let spec = p("spec");
    if vs.spec.hosts.is_empty() {
        out.push(Finding::error(
            spec.field("hosts"),
            "virtual service must have at least one host",
        ));
    }
    if vs.spec.http.is_empty() && vs.spec.tls.is_empty() && vs.spec.tcp.is_empty() {
        out.push(Finding::error(
            spec.clone(),
            "http, tcp or tls must be provided in virtual service",
        ));
    }
    for (i, route) in vs.spec.http.iter().enumerate() {
        check_http_route(route, &spec.field("http").index(i), out);
    }
    for (i, route) in vs.spec.tls.iter().enumerate() {
        let path = spec.field("tls").index(i);
        if route.matches.is_empty() {
            out.push(Finding::error(
                path.field("match"),
                "TLS route must have at least one match condition",
            ));
        }
        for (j, m) in route.matches.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                out.push(Finding::error(
                    path.field("match").index(j).field("sniHosts"),
                    "TLS match must have at least one SNI host",
                ));
            }
        }
        let dests: Vec<_> = route
            .route
            .iter()
            .map(|r| (r.destination.as_ref(), r.weight))
            .collect();
        check_destinations(&dests, &path.field("route"), out);
    }
    for (i, route) in vs.spec.tcp.iter().enumerate() {
        let path = spec.field("tcp").index(i);
        let dests: Vec<_> = route
            .route
            .iter()
            .map(|r| (r.destination.as_ref(), r.weight))
            .collect();
        check_destinations(&dests, &path.field("route"), out);
    }
}

pub(super) fn check_http_route(route: &HttpRoute, path: &FieldPath, out: &mut Vec<Finding>) {
    let has_route = !route.route.is_empty();
    let alternatives =
        route.redirect.is_some() || route.direct_response.is_some() || route.delegate.is_some();
    if !has_route && !alternatives {
        out.push(
            Finding::error(
                path.field("route"),
                "HTTP route, redirect or direct response is required",
            )
            .hint("add route: - destination: {host: SERVICE}"),
        );
    }
    if has_route && route.redirect.is_some() {
        out.push(Finding::error(
            path.field("redirect"),
            "HTTP route cannot contain both route and redirect",
        ));
    }
    for (j, m) in route.matches.iter().enumerate() {
        let mpath = path.field("match").index(j);
        for (field, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                check_string_match(sm, &mpath.field(field), out);
            }
        }
        for (name, sm) in &m.headers {
            check_string_match(sm, &mpath.field("headers").key(name), out);
        }
        if let Some(port) = m.port {
            check_port_number(i64::from(port), &mpath.field("port"), out);
        }
    }
    let dests: Vec<_> = route
        .route
        .iter()
        .map(|r| (r.destination.as_ref(), r.weight))
        .collect();
    check_destinations(&dests, &path.field("route"), out);
    let per_try = route
        .retries
        .as_ref()
        .and_then(|r| r.per_try_timeout.as_ref());
    for (dpath, value) in [
        (path.field("timeout"), route.timeout.as_ref()),
        (path.field("retries").field("perTryTimeout"), per_try),
    ] {
        if let Some(d) = value.filter(|d| crate::duration::parse(d).is_none()) {
            out.push(Finding::error(
                dpath,
                format!("\"{d}\" is not a duration; use e.g. 10s, 1.5s, 500ms, 1m"),
            ));
        }
    }
    if let Some(r) = &route.retries {
        if r.attempts < 0 {
            out.push(Finding::error(
                path.field("retries").field("attempts"),
                "attempts cannot be negative",
            ));
        }
    }
}

pub(super) fn check_string_match(sm: &StringMatch, path: &FieldPath, out: &mut Vec<Finding>) {
    let set = [sm.exact.is_some(), sm.prefix.is_some(), sm.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        out.push(Finding::error(
            path.clone(),
            "exactly one of exact, prefix or regex must be set",
        ));
    }
}

pub(super) fn check_destinations(
    dests: &[(Option<&crate::istio::Destination>, Option<i32>)],
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    for (i, (dest, weight)) in dests.iter().enumerate() {
        let dpath = path.index(i);
        match dest {
            None => out.push(
                Finding::error(dpath.field("destination"), "destination is required")
                    .hint("add destination: {host: SERVICE, port: {number: PORT}}"),
            ),
            Some(d) => {
                if d.host.is_empty() {
                    out.push(Finding::error(
                        dpath.field("destination").field("host"),
                        "destination must have a host",
                    ));
                }
                if let Some(port) = &d.port {
                    check_port_number(
                        i64::from(port.number),
                        &dpath.field("destination").field("port").field("number"),
                        out,
                    );
                }
            }
        }
        if let Some(w) = weight.filter(|w| *w < 0) {
            out.push(Finding::error(
                dpath.field("weight"),
                format!("weight {w} cannot be negative"),
            ));
        }
    }
    let any_weight = dests.iter().any(|(_, w)| w.is_some());
    if dests.len() > 1 || any_weight {
        let total: i64 = dests.iter().map(|(_, w)| i64::from(w.unwrap_or(0))).sum();
        let single_unweighted = dests.len() == 1 && !any_weight;
        if total != 100 && !single_unweighted {
            out.push(
                Finding::error(
                    path.clone(),
                    format!("total destination weight {total} != 100"),
                )
                .hint("the weights of a route's destinations must add up to 100"),
            );
        }
    }
}
