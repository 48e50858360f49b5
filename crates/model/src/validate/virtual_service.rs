//! VirtualService: hosts, HTTP, TLS and TCP routes, and their destinations.

use super::*;
use crate::istio::{HttpRoute, StringMatch, VirtualService};
use crate::problem::{FieldPath, Finding};

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
