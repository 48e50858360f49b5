//! The CORS policy of an HTTP route.

use super::values::{check_duration, check_regex};
use crate::istio::CorsPolicy;
use crate::problem::{FieldPath, Finding};

/// The methods `allowMethods` may name (case-sensitive).
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

pub(super) fn check_cors(c: &CorsPolicy, path: &FieldPath, out: &mut Vec<Finding>) {
    for (i, origin) in c.allow_origins.iter().enumerate() {
        let opath = path.field("allowOrigins").index(i);
        let set = [
            origin.exact.is_some(),
            origin.prefix.is_some(),
            origin.regex.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        match set {
            0 => out.push(
                Finding::error(
                    opath,
                    "'{}' is not a valid match type for CORS allow origins",
                )
                .hint("use exact, prefix or regex"),
            ),
            1 => {
                if let Some(re) = &origin.regex {
                    check_regex(re, "allowOrigins", &opath.field("regex"), out);
                }
            }
            _ => out.push(Finding::error(
                opath,
                "exactly one of exact, prefix or regex must be set",
            )),
        }
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            out.push(
                Finding::error(
                    path.field("allowMethods").index(i),
                    format!("{m:?} is not a supported HTTP method"),
                )
                .hint(format!("one of {} (upper case)", METHODS.join(", "))),
            );
        }
    }
    for field in ["allowHeaders", "exposeHeaders"] {
        let names = if field == "allowHeaders" {
            &c.allow_headers
        } else {
            &c.expose_headers
        };
        for (i, name) in names.iter().enumerate() {
            if let Some(e) = header_name_error(name) {
                out.push(Finding::error(path.field(field).index(i), e));
            }
        }
    }
    if let Some(age) = &c.max_age {
        let apath = path.field("maxAge");
        let before = out.len();
        check_duration(age, &apath, out);
        let whole_seconds = crate::duration::parse(age).is_none_or(|d| d.subsec_nanos() == 0);
        if out.len() == before && !whole_seconds {
            out.push(Finding::error(
                apath,
                "max_age duration is accurate only to seconds precision",
            ));
        }
    }
}

/// A header name of letters, digits, `-` and `_`, or `*` (any header).
fn header_name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("header name cannot be empty".into())
    } else if name == "*"
        || name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        None
    } else {
        Some(format!("header name {name} is not a valid header name"))
    }
}
