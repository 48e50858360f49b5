//! The destinations of a route and their weights (HTTP, TLS and TCP routes alike).

use super::check_port_number;
use crate::istio::Destination;
use crate::problem::{FieldPath, Finding};

/// A route's destinations. Each gets `weight / Σ weights` of the traffic, so the weights
/// need not add up to 100; none may be negative, and several destinations need a
/// positive total (a single destination gets everything whatever its weight).
pub(super) fn check_destinations(
    dests: &[(Option<&Destination>, Option<i32>)],
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
                format!("weight {w} < 0"),
            ));
        }
    }
    let total: i64 = dests.iter().map(|(_, w)| i64::from(w.unwrap_or(0))).sum();
    if dests.len() > 1 && total == 0 {
        out.push(
            Finding::error(path.clone(), "total destination weight = 0")
                .hint("give the destinations weights; each gets weight / (sum of the weights) of the traffic"),
        );
    }
}
