//! Connection pool settings (`tcp` and `http`), of a DestinationRule's traffic policy or of
//! a Sidecar's inbound listeners.

use super::values::check_duration;
use crate::istio::{ConnectionPoolSettings, H2UpgradePolicy, HttpSettings, TcpSettings};
use crate::problem::{FieldPath, Finding};

pub(super) fn check_connection_pool(
    pool: &ConnectionPoolSettings,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    if pool.tcp.is_none() && pool.http.is_none() {
        out.push(
            Finding::error(path.clone(), "connection pool must have at least one field")
                .hint("set tcp, http, or both"),
        );
    }
    if let Some(http) = &pool.http {
        check_http(http, &path.field("http"), out);
    }
    if let Some(tcp) = &pool.tcp {
        check_tcp(tcp, &path.field("tcp"), out);
    }
}

fn non_negative(value: Option<i32>, what: &str, path: FieldPath, out: &mut Vec<Finding>) {
    if value.is_some_and(|v| v < 0) {
        out.push(Finding::error(path, format!("{what} must be non-negative")));
    }
}

fn check_http(http: &HttpSettings, path: &FieldPath, out: &mut Vec<Finding>) {
    for (value, field, what) in [
        (
            http.http1_max_pending_requests,
            "http1MaxPendingRequests",
            "http1 max pending requests",
        ),
        (
            http.http2_max_requests,
            "http2MaxRequests",
            "http2 max requests",
        ),
        (
            http.max_requests_per_connection,
            "maxRequestsPerConnection",
            "max requests per connection",
        ),
        (http.max_retries, "maxRetries", "max retries"),
        (
            http.max_concurrent_streams,
            "maxConcurrentStreams",
            "max concurrent streams",
        ),
    ] {
        non_negative(value, what, path.field(field), out);
    }
    if let Some(d) = &http.idle_timeout {
        check_duration(d, &path.field("idleTimeout"), out);
    }
    if http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
        && http.use_client_protocol == Some(true)
    {
        out.push(Finding::error(
            path.field("useClientProtocol"),
            "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
        ));
    }
}

fn check_tcp(tcp: &TcpSettings, path: &FieldPath, out: &mut Vec<Finding>) {
    non_negative(
        tcp.max_connections,
        "max connections",
        path.field("maxConnections"),
        out,
    );
    for (value, field) in [
        (&tcp.connect_timeout, "connectTimeout"),
        (&tcp.max_connection_duration, "maxConnectionDuration"),
    ] {
        if let Some(d) = value {
            check_duration(d, &path.field(field), out);
        }
    }
    if let Some(d) = &tcp.idle_timeout {
        let before = out.len();
        check_duration(d, &path.field("idleTimeout"), out);
        if out.len() > before && crate::duration::parse(d).is_some_and(|d| d.is_zero()) {
            let f = out.pop().expect("just pushed");
            out.push(f.hint(
                "Istio 1.23 to 1.25 refuse 0s here although the API documents it as disabling the timeout; give a long duration instead",
            ));
        }
    }
    if let Some(ka) = &tcp.tcp_keepalive {
        let kpath = path.field("tcpKeepalive");
        for (value, field) in [(&ka.time, "time"), (&ka.interval, "interval")] {
            if let Some(d) = value {
                check_duration(d, &kpath.field(field), out);
            }
        }
    }
}
