//! Header changes of an HTTP route or destination (`headers.request`/`headers.response`
//! `set`, `add`, `remove`), and the one place the authority may be rewritten.

use std::collections::BTreeMap;

use crate::istio::{HeaderOperations, Headers, HttpRoute};
use crate::problem::{FieldPath, Finding};

/// Pseudo-headers (`:path`) and `host` are Envoy's own; only the authority (`:authority`
/// or `host`) may be set or added on requests.
fn is_internal(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// A name set or added on requests.
fn request_set_error(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("header name cannot be empty".into())
    } else if is_internal(name) && !is_authority(name) {
        Some(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ))
    } else {
        None
    }
}

/// A name removed from requests, or changed on responses.
fn operation_error(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("header name cannot be empty".into())
    } else if name.eq_ignore_ascii_case("host") {
        Some(format!("invalid header {name:?}: cannot set Host header"))
    } else if name.starts_with(':') {
        Some(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ))
    } else {
        None
    }
}

/// Values may hold tabs but no other control characters.
fn value_error(value: &str) -> Option<String> {
    value
        .chars()
        .any(|c| c != '\t' && (c.is_ascii_control()))
        .then(|| format!("header value configuration {value} is invalid"))
}

pub(super) fn check_headers(h: &Headers, path: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(req) = &h.request {
        check_operations(req, request_set_error, &path.field("request"), out);
    }
    if let Some(resp) = &h.response {
        check_operations(resp, operation_error, &path.field("response"), out);
    }
}

fn check_operations(
    ops: &HeaderOperations,
    set_error: fn(&str) -> Option<String>,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let npath = path.field(field).key(name);
            if let Some(e) = set_error(name) {
                out.push(Finding::error(npath.clone(), e));
            }
            if let Some(e) = value_error(value) {
                out.push(Finding::error(npath, e));
            }
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        if let Some(e) = operation_error(name) {
            out.push(Finding::error(path.field("remove").index(i), e));
        }
    }
}

/// `rewrite.authority`, and request headers that set `host` or `:authority`: at most one.
pub(super) fn check_authority_rewrite(route: &HttpRoute, path: &FieldPath, out: &mut Vec<Finding>) {
    let mut current = route
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.clone())
        .unwrap_or_default();
    let Some(req) = route.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    let ops: [(&str, &BTreeMap<String, String>); 2] = [("set", &req.set), ("add", &req.add)];
    for (field, map) in ops {
        for (name, value) in map.iter().filter(|(n, _)| is_authority(n)) {
            if !current.is_empty() {
                out.push(
                    Finding::error(
                        path.field("headers").field("request").field(field).key(name),
                        format!("authority header cannot be set multiple times: have {current:?}, attempting to set {value:?}"),
                    )
                    .hint("set the authority in one place: rewrite.authority or one request header"),
                );
                return;
            }
            current = value.clone();
        }
    }
}
