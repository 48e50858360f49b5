//! Checks of values Istio's networking kinds share: durations, percentages, ports, host
//! names and one-of groups, with Istio's wording.

use std::time::Duration;

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
    }
}
