//! Gateway: servers, their ports, hosts and TLS.

use std::collections::BTreeMap;

use super::server_tls::check_server_tls_files;
use super::*;
use crate::istio::Gateway;
use crate::problem::Finding;

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
