//! Checks of values Istio's networking kinds share: durations, percentages, ports, host
//! names, destinations, one-of groups and regular expressions, with Istio's wording.

use std::time::Duration;

use crate::istio::{Destination, Percent};
use crate::problem::{FieldPath, Finding};

/// A duration as written; an error (and `None`) when it does not parse.
pub(super) fn parse_duration(
    d: &str,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) -> Option<Duration> {
    let parsed = crate::duration::parse(d);
    if parsed.is_none() {
        out.push(Finding::error(
            path.clone(),
            format!("\"{d}\" is not a duration; use e.g. 10s, 1.5s, 500ms, 1m"),
        ));
    }
    parsed
}

/// A duration of at least 1ms, in whole milliseconds.
pub(super) fn check_duration(d: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    let Some(parsed) = parse_duration(d, path, out) else {
        return;
    };
    if parsed < Duration::from_millis(1) {
        out.push(Finding::error(
            path.clone(),
            "duration must be greater than 1ms",
        ));
    } else if parsed.subsec_nanos() % 1_000_000 != 0 {
        out.push(Finding::error(
            path.clone(),
            "only durations to ms precision are supported",
        ));
    }
}

/// The same check where Istio only has the CRD's rule (at least 1ms, any precision).
pub(super) fn check_crd_duration(d: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(parsed) = parse_duration(d, path, out) {
        if parsed < Duration::from_millis(1) {
            out.push(Finding::error(
                path.clone(),
                "must be a valid duration greater than 1ms",
            ));
        }
    }
}

/// An integer percentage, 0..100.
pub(super) fn check_percent(value: Option<i32>, path: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(v) = value.filter(|v| !(0..=100).contains(v)) {
        out.push(Finding::error(
            path.clone(),
            format!("percentage {v} is not in range 0..100"),
        ));
    }
}

/// A fractional percentage: 0, or 0.0001..100.
pub(super) fn check_percentage(p: &Percent, path: &FieldPath, out: &mut Vec<Finding>) {
    let v = p.get();
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        out.push(Finding::error(
            path.field("value"),
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        ));
    }
}

/// Istio's port check, for the fields where it words it itself.
pub(super) fn port_error(n: u32) -> Option<String> {
    (!(1..=65535).contains(&n)).then(|| format!("port number {n} must be in the range 1..65535"))
}

/// A label of a host name: 1 to 63 letters, digits or '-', not starting or ending with '-'.
pub(super) fn is_host_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn dns_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn dns_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let top = parts[parts.len() - 1];
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_host_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified domain name (no wildcard).
pub(super) fn validate_fqdn(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    dns_labels(name)
}

/// A domain name whose first label may be a wildcard (`*`, `*.example.com`, `*-x.example.com`).
pub(super) fn validate_wildcard_domain(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    let wildcard_ok = first == "*"
        || is_host_label(
            first
                .strip_prefix("*-")
                .or(first.strip_prefix('*'))
                .unwrap_or(first),
        );
    if !wildcard_ok {
        return Err(format!(
            "domain name {name:?} invalid (label {first:?} invalid)"
        ));
    }
    rest.map_or(Ok(()), dns_labels)
}

/// A destination: a host name (not `*`), a subset name that is a DNS label, a valid port.
pub(super) fn check_destination(d: &Destination, path: &FieldPath, out: &mut Vec<Finding>) {
    let host = path.field("host");
    if d.host == "*" {
        out.push(Finding::error(host, "invalid destination host *"));
    } else if let Err(e) = validate_wildcard_domain(&d.host) {
        out.push(Finding::error(host, e));
    }
    match d.subset.as_deref() {
        Some("") => out.push(Finding::error(
            path.field("subset"),
            "subset name cannot be empty",
        )),
        Some(s) if !is_host_label(s) => out.push(Finding::error(
            path.field("subset"),
            format!("subset name is invalid: {s}"),
        )),
        _ => {}
    }
    if let Some(e) = d.port.as_ref().and_then(|p| port_error(p.number)) {
        out.push(Finding::error(path.field("port").field("number"), e));
    }
}

/// At most one field of a one-of group may be set: `(field, is set)`.
pub(super) fn check_one_of(fields: &[(&str, bool)], path: &FieldPath, out: &mut Vec<Finding>) {
    let set: Vec<&str> = fields.iter().filter(|(_, s)| *s).map(|(f, _)| *f).collect();
    if set.len() > 1 {
        let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        out.push(Finding::error(
            path.field(set[1]),
            format!(
                "only one of {} or {last} can be set (found {})",
                rest.join(", "),
                set.join(" and ")
            ),
        ));
    }
}

/// A regular expression in RE2 syntax, at most 1024 characters.
pub(super) fn check_regex(re: &str, where_: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    if re.is_empty() {
        out.push(Finding::error(
            path.clone(),
            format!("{where_:?}: regex string match should not be empty"),
        ));
    } else if re.len() > 1024 {
        out.push(Finding::error(
            path.clone(),
            format!("{where_:?}: regex is too large, max length allowed is 1024"),
        ));
    } else if let Err(e) = regex::Regex::new(re) {
        let why = e.to_string();
        let why = why.lines().last().unwrap_or_default().trim().to_string();
        out.push(Finding::error(
            path.clone(),
            format!("{where_:?}: {why}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_as_istio_reads_them() {
        for ok in [
            "httpbin",
            "httpbin.full.svc.cluster.local",
            "istio.io.",
            "Upper.Example",
        ] {
            assert_eq!(validate_fqdn(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty domain name not allowed"),
            ("a..b", "domain name \"a..b\" invalid (label \"\" invalid)"),
            ("example.123", "domain name \"example.123\" invalid (top level domain \"123\" cannot be all-numeric)"),
            ("-a.example", "domain name \"-a.example\" invalid (label \"-a\" invalid)"),
            ("*.example.com", "domain name \"*.example.com\" invalid (label \"*\" invalid)"),
        ] {
            assert_eq!(validate_fqdn(bad), Err(why.to_string()), "{bad}");
        }
        for ok in [
            "*",
            "*.example.com",
            "*-x.example.com",
            "*x.example.com",
            "httpbin",
        ] {
            assert_eq!(validate_wildcard_domain(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_wildcard_domain("a.*.example.com"),
            // As Istio words it: the labels after the first are checked as a name of their own.
            Err("domain name \"*.example.com\" invalid (label \"*\" invalid)".to_string())
        );
        assert_eq!(
            validate_wildcard_domain("**.example.com"),
            Err("domain name \"**.example.com\" invalid (label \"**\" invalid)".to_string())
        );
    }
}
