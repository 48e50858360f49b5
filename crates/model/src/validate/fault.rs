//! Fault injection of an HTTP route: a delay, an abort, or both, each for a share of
//! requests.

use super::values::{check_duration, check_one_of, check_percentage};
use crate::istio::{FaultAbort, FaultDelay, HttpFaultInjection};
use crate::problem::{FieldPath, Finding};

/// The gRPC status names an abort may return.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub(super) fn check_fault(f: &HttpFaultInjection, path: &FieldPath, out: &mut Vec<Finding>) {
    if f.delay.is_none() && f.abort.is_none() {
        out.push(
            Finding::error(path.clone(), "HTTP fault injection must have an abort and/or a delay")
                .hint("add delay: {fixedDelay: 5s, percentage: {value: 10}} or abort: {httpStatus: 503, percentage: {value: 10}}"),
        );
    }
    if let Some(d) = &f.delay {
        check_delay(d, &path.field("delay"), out);
    }
    if let Some(a) = &f.abort {
        check_abort(a, &path.field("abort"), out);
    }
}

fn check_delay(d: &FaultDelay, path: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(p) = &d.percentage {
        check_percentage(p, &path.field("percentage"), out);
    }
    check_one_of(
        &[
            ("fixedDelay", d.fixed_delay.is_some()),
            ("exponentialDelay", d.exponential_delay.is_some()),
        ],
        path,
        out,
    );
    if let Some(fixed) = &d.fixed_delay {
        check_duration(fixed, &path.field("fixedDelay"), out);
    }
    if d.exponential_delay.is_some() {
        out.push(
            Finding::error(
                path.field("exponentialDelay"),
                "exponentialDelay not supported yet",
            )
            .hint("use fixedDelay"),
        );
    }
}

fn check_abort(a: &FaultAbort, path: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(p) = &a.percentage {
        check_percentage(p, &path.field("percentage"), out);
    }
    check_one_of(
        &[
            ("httpStatus", a.http_status.is_some()),
            ("grpcStatus", a.grpc_status.is_some()),
            ("http2Error", a.http2_error.is_some()),
        ],
        path,
        out,
    );
    if let Some(status) = a.http_status {
        // 600 itself passes, as in Istio.
        if !(200..=600).contains(&status) {
            out.push(Finding::error(
                path.field("httpStatus"),
                format!("HTTP status {status} is not in range 200-599"),
            ));
        }
    }
    if let Some(code) = &a.grpc_status {
        if !GRPC_CODES.contains(&code.as_str()) {
            out.push(Finding::error(
                path.field("grpcStatus"),
                format!("gRPC status {code:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
            ));
        }
    }
    if a.http2_error.is_some() {
        out.push(Finding::error(
            path.field("http2Error"),
            "HTTP/2 abort fault injection not supported yet",
        ));
    }
    if a.http_status.is_none() && a.grpc_status.is_none() && a.http2_error.is_none() {
        out.push(
            Finding::warning(path.clone(), "abort configured, but error type not set")
                .hint("set httpStatus (e.g. 503) or grpcStatus (e.g. UNAVAILABLE)"),
        );
    }
}
