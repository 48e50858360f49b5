//! VirtualService: hosts (none makes it a delegate), and its HTTP, TLS and TCP routes.

use super::destinations::check_destinations;
use super::http_route::check_http_route;
use super::*;
use crate::istio::VirtualService;
use crate::problem::Finding;

pub(super) fn check_virtual_service(vs: &VirtualService, out: &mut Vec<Finding>) {
    let spec = p("spec");
    if vs.spec.http.is_empty() && vs.spec.tls.is_empty() && vs.spec.tcp.is_empty() {
        out.push(Finding::error(
            spec.clone(),
            "http, tcp or tls must be provided in virtual service",
        ));
    }
    // A VirtualService without hosts is a delegate: it only serves the routes of another
    // VirtualService that names it in `delegate`, so it binds to no gateway and has HTTP
    // routes only.
    let delegate = vs.spec.hosts.is_empty();
    if delegate {
        let hint = "a VirtualService without hosts is a delegate, used only through another one's http[].delegate; add hosts to use it on its own";
        for (field, set, what) in [
            (
                "gateways",
                !vs.spec.gateways.is_empty(),
                "gateways specified",
            ),
            ("tls", !vs.spec.tls.is_empty(), "tls route specified"),
            ("tcp", !vs.spec.tcp.is_empty(), "tcp route specified"),
        ] {
            if set {
                out.push(
                    Finding::error(
                        spec.field(field),
                        format!("delegate virtual service must have no {what}"),
                    )
                    .hint(hint),
                );
            }
        }
    }
    for (i, route) in vs.spec.http.iter().enumerate() {
        check_http_route(route, delegate, &spec.field("http").index(i), out);
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
