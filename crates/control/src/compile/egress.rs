//! Sidecar `egress`: the services a proxy is given, as Istio scopes a sidecar. Each
//! listener imports the services its `hosts` name (`namespace/dnsName`); a listener with a
//! port imports that port of them, one without a port every port. Traffic to a service
//! that is not imported is not the mesh's: the proxy passes it through as it came.
//! Pure.

use tessera_model::istio::IstioEgressListener;

use crate::outbound_cache::Imported;

/// What `egress` (of a Sidecar in `sidecar_ns`) imports of the service `host` in `svc_ns`.
/// An empty `egress` imports everything.
pub(crate) fn imported(
    egress: &[IstioEgressListener],
    sidecar_ns: &str,
    svc_ns: &str,
    host: &str,
) -> Imported {
    if egress.is_empty() {
        return Imported::AllPorts;
    }
    let mut ports = Vec::new();
    for l in egress {
        if !l
            .hosts
            .iter()
            .any(|h| host_admits(h, sidecar_ns, svc_ns, host))
        {
            continue;
        }
        match l.port.as_ref().map(|p| u16::try_from(p.number)) {
            None => return Imported::AllPorts,
            Some(Ok(p)) => ports.push(p),
            Some(Err(_)) => {}
        }
    }
    if ports.is_empty() {
        return Imported::No;
    }
    ports.sort_unstable();
    ports.dedup();
    Imported::Ports(ports)
}

/// Whether one `namespace/dnsName` entry names the service: the namespace is `*` (any),
/// `.` (the Sidecar's own), `~` (none) or a name; the DNS name is `*`, a `*.suffix`
/// wildcard or the service's FQDN.
pub(crate) fn host_admits(entry: &str, sidecar_ns: &str, svc_ns: &str, host: &str) -> bool {
    let Some((ns, dns)) = entry.split_once('/') else {
        return false;
    };
    let ns_ok = match ns {
        "*" => true,
        "." => svc_ns == sidecar_ns,
        "~" => false,
        name => svc_ns == name,
    };
    ns_ok
        && match dns {
            "*" => true,
            wildcard if wildcard.starts_with("*.") => host.ends_with(&wildcard[1..]),
            exact => host == exact,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_model::istio::SidecarPort;

    fn listener(port: Option<u32>, hosts: &[&str]) -> IstioEgressListener {
        IstioEgressListener {
            port: port.map(|number| SidecarPort {
                number,
                ..Default::default()
            }),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn host_entries_as_istio_reads_them() {
        let h = "db.prod.svc.cluster.local";
        let table: &[(&str, bool)] = &[
            ("*/*", true),
            ("./*", false),
            ("prod/*", true),
            ("test/*", false),
            ("~/*", false),
            ("*/db.prod.svc.cluster.local", true),
            ("prod/db.prod.svc.cluster.local", true),
            ("prod/web.prod.svc.cluster.local", false),
            ("*/*.prod.svc.cluster.local", true),
            ("*/*.svc.cluster.local", true),
            ("*/*.test.svc.cluster.local", false),
            // Without a namespace the entry is invalid (validation refuses it).
            ("db.prod.svc.cluster.local", false),
            ("*/db", false),
        ];
        for (entry, want) in table {
            assert_eq!(host_admits(entry, "web", "prod", h), *want, "{entry}");
        }
        assert!(host_admits("./*", "prod", "prod", h));
    }

    #[test]
    fn listeners_import_ports_or_everything() {
        let h = "db.prod.svc.cluster.local";
        assert_eq!(imported(&[], "web", "prod", h), Imported::AllPorts);
        let scoped = [listener(None, &["./*", "istio-system/*"])];
        assert_eq!(imported(&scoped, "web", "prod", h), Imported::No);
        assert_eq!(imported(&scoped, "prod", "prod", h), Imported::AllPorts);
        let by_port = [
            listener(Some(9080), &["prod/*"]),
            listener(Some(5432), &["*/db.prod.svc.cluster.local"]),
            listener(Some(8080), &["test/*"]),
        ];
        assert_eq!(
            imported(&by_port, "web", "prod", h),
            Imported::Ports(vec![5432, 9080])
        );
        // A catch-all listener after port listeners imports every port.
        let mixed = [listener(Some(9080), &["prod/*"]), listener(None, &["*/*"])];
        assert_eq!(imported(&mixed, "web", "prod", h), Imported::AllPorts);
    }
}
