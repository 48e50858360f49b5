//! One HTTP route of a VirtualService: what it does (route, redirect, direct response or
//! delegation, never two), its matches, mirroring, timeouts and retries; fault injection,
//! CORS and header changes have their own modules.

use super::cors::check_cors;
use super::destinations::check_destinations;
use super::fault::check_fault;
use super::headers::{check_authority_rewrite, check_headers};
use super::values::{check_destination, check_regex};
use super::*;
use crate::istio::{HttpMatchRequest, HttpRoute, StringMatch};
use crate::problem::{FieldPath, Finding};

/// `in_delegate`: the route belongs to a delegate VirtualService (one without hosts).
pub(super) fn check_http_route(
    route: &HttpRoute,
    in_delegate: bool,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    // A route that delegates hands its requests to the delegate's routes; only that
    // delegation is checked, and the delegate's routes may not delegate again.
    let root = !in_delegate && route.delegate.is_some();
    if root {
        check_root_route(route, path, out);
    } else {
        if in_delegate && route.delegate.is_some() {
            out.push(
                Finding::error(
                    path.field("delegate"),
                    "delegate HTTP route cannot contain delegate",
                )
                .hint("only one level of delegation is supported"),
            );
        }
        check_conflicts(route, path, out);
    }
    for (j, m) in route.matches.iter().enumerate() {
        check_match(m, root || in_delegate, &path.field("match").index(j), out);
    }
    if let Some(h) = &route.headers {
        check_headers(h, &path.field("headers"), out);
    }
    check_authority_rewrite(route, path, out);
    if let Some(c) = &route.cors_policy {
        check_cors(c, &path.field("corsPolicy"), out);
    }
    if let Some(f) = &route.fault {
        check_fault(f, &path.field("fault"), out);
    }
    check_mirrors(route, path, out);
    let dests: Vec<_> = route
        .route
        .iter()
        .map(|r| (r.destination.as_ref(), r.weight))
        .collect();
    check_destinations(&dests, &path.field("route"), out);
    for (i, r) in route.route.iter().enumerate() {
        if let Some(h) = &r.headers {
            check_headers(h, &path.field("route").index(i).field("headers"), out);
        }
    }
    check_timeouts(route, path, out);
}

fn check_root_route(route: &HttpRoute, path: &FieldPath, out: &mut Vec<Finding>) {
    let name = route.name.as_deref().unwrap_or_default();
    let hint = "a route with delegate takes its destinations from the delegate VirtualService";
    if route.redirect.is_some() {
        out.push(
            Finding::error(
                path.field("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            )
            .hint(hint),
        );
    }
    if !route.route.is_empty() {
        out.push(
            Finding::error(
                path.field("route"),
                format!("root HTTP route {name} must not specify route"),
            )
            .hint(hint),
        );
    }
}

/// A route does one thing: forward (`route`), `redirect`, or `directResponse`; fault
/// injection and rewrites only go with forwarding.
fn check_conflicts(route: &HttpRoute, path: &FieldPath, out: &mut Vec<Finding>) {
    let forwards = !route.route.is_empty();
    let mut conflict = |field: &str, message: &str| {
        out.push(Finding::error(path.field(field), message));
    };
    if route.redirect.is_some() {
        if forwards {
            conflict(
                "redirect",
                "HTTP route cannot contain both route and redirect",
            );
        }
        if route.fault.is_some() {
            conflict("fault", "HTTP route cannot contain both fault and redirect");
        }
        if route.rewrite.is_some() {
            conflict(
                "rewrite",
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if route.direct_response.is_some() {
            conflict(
                "directResponse",
                "HTTP route rule cannot contain both direct_response and redirect",
            );
        }
    } else if route.direct_response.is_some() {
        if forwards {
            conflict(
                "directResponse",
                "HTTP route cannot contain both route and direct_response",
            );
        }
        if route.fault.is_some() {
            conflict(
                "fault",
                "HTTP route cannot contain both fault and direct_response",
            );
        }
        if route.rewrite.is_some() {
            conflict(
                "rewrite",
                "HTTP route rule cannot contain both rewrite and direct_response",
            );
        }
    } else if !forwards {
        out.push(
            Finding::error(
                path.field("route"),
                "HTTP route, redirect or direct_response is required",
            )
            .hint("add route: - destination: {host: SERVICE}"),
        );
    }
}

/// `delegating`: the match belongs to a root or delegate route, where regular expressions
/// cannot be merged and are refused.
fn check_match(m: &HttpMatchRequest, delegating: bool, path: &FieldPath, out: &mut Vec<Finding>) {
    let fields = [
        ("uri", "url match", &m.uri),
        ("scheme", "scheme match", &m.scheme),
        ("method", "method match", &m.method),
        ("authority", "authority match", &m.authority),
    ];
    for (field, what, sm) in fields {
        if let Some(sm) = sm {
            check_string_match(sm, field, delegating, what, &path.field(field), out);
        }
    }
    for (map, field, what) in [
        (&m.headers, "headers", "header match"),
        (&m.query_params, "queryParams", "query param match"),
        (&m.without_headers, "withoutHeaders", "withoutHeaders match"),
    ] {
        for (name, sm) in map {
            let what = format!("{what} {name}");
            check_string_match(
                sm,
                field,
                delegating,
                &what,
                &path.field(field).key(name),
                out,
            );
        }
    }
    if let Some(port) = m.port {
        check_port_number(i64::from(port), &path.field("port"), out);
    }
}

/// One of `exact`, `prefix` and `regex`; a regex must compile (RE2 syntax, at most 1024
/// characters), and may not be used when delegating.
fn check_string_match(
    sm: &StringMatch,
    field: &str,
    delegating: bool,
    what: &str,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    let set = [sm.exact.is_some(), sm.prefix.is_some(), sm.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    // A header or query parameter without a value matches when it is present
    // (`withoutHeaders`: when it is absent).
    let presence = matches!(field, "headers" | "queryParams" | "withoutHeaders");
    if set > 1 || (set == 0 && !presence) {
        out.push(Finding::error(
            path.clone(),
            "exactly one of exact, prefix or regex must be set",
        ));
    }
    let Some(re) = &sm.regex else {
        return;
    };
    if delegating {
        out.push(Finding::error(
            path.field("regex"),
            format!("{what} does not support regex match for delegating"),
        ));
    } else if field != "withoutHeaders" {
        check_regex(re, field, &path.field("regex"), out);
    }
}

fn check_mirrors(route: &HttpRoute, path: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(p) = route.mirror_percent {
        let mpath = path.field("mirrorPercent");
        if p > 100 {
            out.push(Finding::error(
                mpath.clone(),
                format!("mirror_percent must have a max value of 100 (it has {p})"),
            ));
        }
        out.push(Finding::warning(
            mpath,
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        ));
    }
    if let Some(p) = &route.mirror_percentage {
        mirror_share(
            p.get(),
            "mirror_percentage",
            &path.field("mirrorPercentage").field("value"),
            out,
        );
    }
    if let Some(m) = &route.mirror {
        check_destination(m, &path.field("mirror"), out);
        if !route.mirrors.is_empty() {
            out.push(Finding::error(
                path.field("mirrors"),
                "HTTP route cannot contain both mirror and mirrors",
            ));
        }
    }
    for (i, m) in route.mirrors.iter().enumerate() {
        let mpath = path.field("mirrors").index(i);
        match &m.destination {
            None => out.push(Finding::error(
                mpath.field("destination"),
                "destination is required for mirrors",
            )),
            Some(d) => check_destination(d, &mpath.field("destination"), out),
        }
        if let Some(p) = &m.percentage {
            mirror_share(
                p.get(),
                "mirror percentage",
                &mpath.field("percentage").field("value"),
                out,
            );
        }
    }
}

fn mirror_share(value: f64, what: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    if value > 100.0 {
        out.push(Finding::error(
            path.clone(),
            format!("{what} must have a max value of 100 (it has {value:.6})"),
        ));
    } else if value < 0.0 {
        out.push(Finding::error(
            path.clone(),
            format!("{what} must have a min value of 0 (it has {value:.6})"),
        ));
    }
}

fn check_timeouts(route: &HttpRoute, path: &FieldPath, out: &mut Vec<Finding>) {
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
