//! DestinationRule: the host, subsets and their traffic policies, and the client TLS a
//! sidecar originates.

use std::collections::BTreeSet;

use super::*;
use crate::istio::{ClientTlsMode, ClientTlsSettings, DestinationRule};
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
