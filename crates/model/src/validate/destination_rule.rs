//! DestinationRule: the host, and the subsets with their traffic policies.

use std::collections::BTreeSet;

use super::traffic::check_traffic_policy;
use super::*;
use crate::istio::DestinationRule;
use crate::problem::Finding;

pub(super) fn check_destination_rule(dr: &DestinationRule, out: &mut Vec<Finding>) {
    let spec = p("spec");
    if dr.spec.host.is_empty() {
        out.push(
            Finding::error(spec.field("host"), "missing required field \"host\"")
                .hint("the service name, e.g. httpbin.full.svc.cluster.local"),
        );
    }
    if let Some(tp) = &dr.spec.traffic_policy {
        check_traffic_policy(tp, &spec.field("trafficPolicy"), out);
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        let path = spec.field("subsets").index(i);
        if s.name.is_empty() {
            out.push(Finding::error(
                path.field("name"),
                "missing required field \"name\"",
            ));
        } else if !names.insert(s.name.as_str()) {
            out.push(Finding::error(
                path.field("name"),
                format!("duplicate subset name \"{}\"", s.name),
            ));
        }
        if let Some(tp) = &s.traffic_policy {
            check_traffic_policy(tp, &path.field("trafficPolicy"), out);
        }
    }
}
