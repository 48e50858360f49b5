//! A DestinationRule's traffic policy (top level, per subset and per port): at least one
//! setting, and each setting checked by its own rules.

use super::check_port_number;
use super::client_tls::check_client_tls;
use super::connection_pool::check_connection_pool;
use super::load_balancer::check_load_balancer;
use super::values::{check_duration, check_percent, port_error, validate_fqdn};
use crate::istio::{OutlierDetection, PortTrafficPolicy, TrafficPolicy, TunnelSettings};
use crate::problem::{FieldPath, Finding};

pub(super) fn check_traffic_policy(tp: &TrafficPolicy, path: &FieldPath, out: &mut Vec<Finding>) {
    let empty = tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none();
    if empty {
        out.push(
            Finding::error(path.clone(), "traffic policy must have at least one field")
                .hint("set loadBalancer, connectionPool, outlierDetection, tls, portLevelSettings, tunnel or proxyProtocol, or remove trafficPolicy"),
        );
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        out.push(Finding::error(
            path.field("proxyProtocol"),
            "tunnel and proxyProtocol must not be set together",
        ));
    }
    if let Some(lb) = &tp.load_balancer {
        check_load_balancer(
            lb,
            tp.outlier_detection.is_some(),
            &path.field("loadBalancer"),
            out,
        );
    }
    if let Some(pool) = &tp.connection_pool {
        check_connection_pool(pool, &path.field("connectionPool"), out);
    }
    if let Some(od) = &tp.outlier_detection {
        check_outlier_detection(od, &path.field("outlierDetection"), out);
    }
    if let Some(tls) = &tp.tls {
        check_client_tls(tls, &path.field("tls"), out);
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        check_port_policy(pl, &path.field("portLevelSettings").index(i), out);
    }
    if let Some(tunnel) = &tp.tunnel {
        check_tunnel(tunnel, &path.field("tunnel"), out);
    }
}

/// A port's settings replace the top-level ones (nothing is inherited); there is no
/// tunnel or proxyProtocol per port.
fn check_port_policy(pl: &PortTrafficPolicy, path: &FieldPath, out: &mut Vec<Finding>) {
    match &pl.port {
        None => out.push(
            Finding::error(path.field("port"), "portTrafficPolicy must have valid port")
                .hint("add port: {number: PORT}"),
        ),
        Some(port) => check_port_number(
            i64::from(port.number),
            &path.field("port").field("number"),
            out,
        ),
    }
    if pl.load_balancer.is_none()
        && pl.connection_pool.is_none()
        && pl.outlier_detection.is_none()
        && pl.tls.is_none()
    {
        out.push(
            Finding::error(
                path.clone(),
                "port traffic policy must have at least one field",
            )
            .hint("set loadBalancer, connectionPool, outlierDetection or tls for the port"),
        );
        return;
    }
    if let Some(od) = &pl.outlier_detection {
        check_outlier_detection(od, &path.field("outlierDetection"), out);
    }
    if let Some(pool) = &pl.connection_pool {
        check_connection_pool(pool, &path.field("connectionPool"), out);
    }
    if let Some(lb) = &pl.load_balancer {
        check_load_balancer(
            lb,
            pl.outlier_detection.is_some(),
            &path.field("loadBalancer"),
            out,
        );
    }
    if let Some(tls) = &pl.tls {
        check_client_tls(tls, &path.field("tls"), out);
    }
}

fn check_outlier_detection(od: &OutlierDetection, path: &FieldPath, out: &mut Vec<Finding>) {
    for (value, field) in [
        (&od.base_ejection_time, "baseEjectionTime"),
        (&od.interval, "interval"),
    ] {
        if let Some(d) = value {
            check_duration(d, &path.field(field), out);
        }
    }
    if od.consecutive_errors.is_some_and(|n| n != 0) {
        out.push(Finding::warning(
            path.field("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        ));
    }
    if od.split_external_local_origin_errors != Some(true)
        && od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
    {
        out.push(
            Finding::error(
                path.field("consecutiveLocalOriginFailures"),
                "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
            )
            .hint("set splitExternalLocalOriginErrors: true"),
        );
    }
    check_percent(
        od.max_ejection_percent,
        &path.field("maxEjectionPercent"),
        out,
    );
    check_percent(od.min_health_percent, &path.field("minHealthPercent"), out);
}

fn check_tunnel(t: &TunnelSettings, path: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(p) = t
        .protocol
        .as_deref()
        .filter(|p| !["", "CONNECT", "POST"].contains(p))
    {
        out.push(
            Finding::error(
                path.field("protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            )
            .hint(format!("found \"{p}\"; omit it for CONNECT")),
        );
    }
    match t.target_host.as_deref() {
        None => out.push(Finding::error(
            path.field("targetHost"),
            "missing required field \"targetHost\"",
        )),
        Some(host) => {
            if let Err(fqdn) = validate_fqdn(host) {
                if host.parse::<std::net::IpAddr>().is_err() {
                    out.push(Finding::error(
                        path.field("targetHost"),
                        format!("tunnel target host must be valid FQDN or IP address: {fqdn}; {host} is not a valid IP"),
                    ));
                }
            }
        }
    }
    match t.target_port {
        None => out.push(Finding::error(
            path.field("targetPort"),
            "missing required field \"targetPort\"",
        )),
        Some(port) => {
            if let Some(e) = port_error(port) {
                out.push(Finding::error(
                    path.field("targetPort"),
                    format!("tunnel target port is invalid: {e}"),
                ));
            }
        }
    }
}
