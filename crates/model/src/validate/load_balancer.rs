//! A traffic policy's `loadBalancer`: the simple or consistent-hash policy, locality
//! weights and failover, and slow start (`warmup`).

use std::collections::BTreeMap;

use super::values::{check_crd_duration, check_duration, check_one_of, parse_duration};
use crate::istio::{
    ConsistentHashLb, LoadBalancerSettings, LocalityLbSetting, WarmupConfiguration,
};
use crate::problem::{FieldPath, Finding};

/// Maglev tables must be smaller than this (and prime).
const MAGLEV_MAX_TABLE_SIZE: u64 = 5_000_011;

/// `has_outlier`: whether the same policy (or port-level policy) sets `outlierDetection`,
/// without which locality failover never fails over.
pub(super) fn check_load_balancer(
    lb: &LoadBalancerSettings,
    has_outlier: bool,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    check_one_of(
        &[
            ("simple", lb.simple.is_some()),
            ("consistentHash", lb.consistent_hash.is_some()),
        ],
        path,
        out,
    );
    if let Some(ch) = &lb.consistent_hash {
        check_consistent_hash(ch, &path.field("consistentHash"), out);
    }
    if let Some(locality) = &lb.locality_lb_setting {
        check_locality(locality, has_outlier, &path.field("localityLbSetting"), out);
    }
    if let Some(d) = &lb.warmup_duration_secs {
        check_crd_duration(d, &path.field("warmupDurationSecs"), out);
    }
    if let Some(w) = &lb.warmup {
        check_warmup(w, &path.field("warmup"), out);
    }
}

fn check_consistent_hash(ch: &ConsistentHashLb, path: &FieldPath, out: &mut Vec<Finding>) {
    check_one_of(
        &[
            ("httpHeaderName", ch.http_header_name.is_some()),
            ("httpCookie", ch.http_cookie.is_some()),
            ("useSourceIp", ch.use_source_ip.is_some()),
            (
                "httpQueryParameterName",
                ch.http_query_parameter_name.is_some(),
            ),
        ],
        path,
        out,
    );
    check_one_of(
        &[
            ("ringHash", ch.ring_hash.is_some()),
            ("maglev", ch.maglev.is_some()),
        ],
        path,
        out,
    );
    if let Some(cookie) = &ch.http_cookie {
        let cpath = path.field("httpCookie");
        if cookie.name.as_deref().unwrap_or_default().is_empty() {
            out.push(Finding::error(
                cpath.field("name"),
                "name required for HttpCookie",
            ));
        }
        // `0s` is allowed: it makes a session cookie.
        if let Some(ttl) = &cookie.ttl {
            parse_duration(ttl, &cpath.field("ttl"), out);
        }
    }
    if ch.minimum_ring_size.is_some_and(|n| n != 0) {
        let mpath = path.field("minimumRingSize");
        out.push(
            Finding::warning(
                mpath.clone(),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            )
            .hint("move it to ringHash.minimumRingSize"),
        );
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            out.push(Finding::error(
                mpath,
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            ));
        }
    }
    if let Some(maglev) = &ch.maglev {
        let tpath = path.field("maglev").field("tableSize");
        let size = maglev.table_size.unwrap_or(0);
        if size == 0 {
            out.push(Finding::error(
                tpath.clone(),
                "tableSize must be set for maglev",
            ));
        }
        if size >= MAGLEV_MAX_TABLE_SIZE {
            out.push(Finding::error(
                tpath.clone(),
                "tableSize must be less than 5000011 for maglev",
            ));
        }
        // Sizes over the limit are refused already; testing them would take seconds.
        if size < MAGLEV_MAX_TABLE_SIZE && !is_prime(size) {
            out.push(
                Finding::error(tpath, "tableSize must be a prime number for maglev")
                    .hint("e.g. 65537 (the default) or 1021"),
            );
        }
    }
}

/// Envoy's primality test for Maglev table sizes (0 is not prime).
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut factor = 3;
    while factor <= x / factor {
        if x.is_multiple_of(factor) {
            return false;
        }
        factor += 2;
    }
    true
}

/// Topology labels that `failoverPriority` may not name when `failover` is set.
const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// Locality weights (`distribute`) or failover between regions, as Istio checks them: the
/// first problem found ends the check.
fn check_locality(
    l: &LocalityLbSetting,
    has_outlier: bool,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        out.push(Finding::error(
            path.field("failover"),
            "can not simultaneously specify 'distribute' and 'failover'",
        ));
        return;
    }
    if !l.failover.is_empty() {
        if let Some((i, label)) = l
            .failover_priority
            .iter()
            .enumerate()
            .find(|(_, p)| TOPOLOGY_LABELS.contains(&p.as_str()))
        {
            out.push(Finding::error(
                path.field("failoverPriority").index(i),
                format!("can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"),
            ));
            return;
        }
    }
    let mut sources = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let dpath = path.field("distribute").index(i);
        sources.push(d.from.as_str());
        if let Some((loc, _)) = d.to.iter().find(|(_, w)| **w == 0 || **w > 100) {
            out.push(Finding::error(
                dpath.field("to").key(loc),
                "locality weight must be in range [1, 100]",
            ));
            return;
        }
        let total: u64 = d.to.values().map(|w| u64::from(*w)).sum();
        if total != 100 {
            out.push(Finding::error(
                dpath.field("to"),
                format!("total locality weight {total} != 100"),
            ));
            return;
        }
        let targets: Vec<&str> = d.to.keys().map(String::as_str).collect();
        if let Err(e) = check_localities(&targets) {
            out.push(Finding::error(dpath.field("to"), e));
        }
    }
    if let Err(e) = check_localities(&sources) {
        out.push(Finding::error(path.field("distribute"), e));
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
        out.push(
            Finding::warning(
                path.clone(),
                "outlier detection policy must be provided for failover",
            )
            .hint(
                "without outlierDetection no endpoint is ever ejected, so traffic never fails over",
            ),
        );
    }
    for (i, f) in l.failover.iter().enumerate() {
        let fpath = path.field("failover").index(i);
        if f.from == f.to {
            out.push(Finding::error(
                fpath.clone(),
                "locality lb failover settings must specify different regions",
            ));
        }
        if f.from.contains('/') || f.to.contains('/') {
            out.push(Finding::error(
                fpath.clone(),
                "locality lb failover only specify region",
            ));
        }
        if f.from.contains('*') || f.to.contains('*') {
            out.push(Finding::error(
                fpath,
                "locality lb failover region should not contain '*' wildcard",
            ));
        }
    }
}

/// A list of `region[/zone[/subzone]]` localities: at most one trailing `*`, no empty part,
/// and none covered by an earlier one.
fn check_localities(localities: &[&str]) -> Result<(), String> {
    // region -> zone -> subzones; "*" marks "everything below".
    let mut seen: BTreeMap<&str, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for &locality in localities {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        let overlap = || {
            Err(format!(
                "locality {locality} overlap with previous specified ones"
            ))
        };
        if seen.contains_key("*") {
            return overlap();
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "locality {locality} must not contain empty region/zone/subzone info"
            ));
        }
        match parts[..] {
            [region] => {
                if seen.contains_key(region) {
                    return overlap();
                }
                seen.insert(region, BTreeMap::from([("*", vec!["*"])]));
            }
            [region, zone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(zone) {
                    return overlap();
                }
                zones.insert(zone, vec!["*"]);
            }
            [region, zone, subzone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") {
                    return overlap();
                }
                let subzones = zones.entry(zone).or_default();
                if subzones.contains(&"*") || subzones.contains(&subzone) {
                    return overlap();
                }
                subzones.push(subzone);
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_warmup(w: &WarmupConfiguration, path: &FieldPath, out: &mut Vec<Finding>) {
    match &w.duration {
        None => out.push(Finding::error(
            path.field("duration"),
            "duration is required",
        )),
        Some(d) => check_duration(d, &path.field("duration"), out),
    }
    if let Some(p) = w.minimum_percent.map(|p| p.get()) {
        if p > 100.0 {
            out.push(Finding::error(
                path.field("minimumPercent"),
                "minimumPercent value should be less than or equal to 100",
            ));
        } else if p < 0.0 {
            out.push(Finding::error(
                path.field("minimumPercent"),
                "minimumPercent should be greater than or equal to 0",
            ));
        }
    }
    if w.aggression.is_some_and(|a| a.get() < 1.0) {
        out.push(Finding::error(
            path.field("aggression"),
            "aggression should be greater than or equal to 1",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maglev_sizes_are_prime_as_envoy_counts() {
        let primes: Vec<u64> = (0..30).filter(|n| is_prime(*n)).collect();
        assert_eq!(primes, [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
    }

    #[test]
    fn localities_may_not_overlap() {
        assert_eq!(
            check_localities(&["us-east", "us-west/zone1", "eu/*"]),
            Ok(())
        );
        for (list, why) in [
            (
                &["us", "us/zone1"][..],
                "locality us/zone1 overlap with previous specified ones",
            ),
            (
                &["us/z1/*", "us/z1/s1"][..],
                "locality us/z1/s1 overlap with previous specified ones",
            ),
            (
                &["*", "us"][..],
                "locality us overlap with previous specified ones",
            ),
            (
                &["us/*/a"][..],
                "locality us/*/a wildcard '*' number can not exceed 1 and must be in the end",
            ),
            (
                &["us//a"][..],
                "locality us//a must not contain empty region/zone/subzone info",
            ),
        ] {
            assert_eq!(check_localities(list), Err(why.to_string()), "{list:?}");
        }
    }
}
