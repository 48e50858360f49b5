//! The sealed cluster network: one namespace holding a bridge (the pods' gateway and the
//! place where service VIPs are DNATed), and one namespace per pod on a veth pair. Both
//! ends of every veth live in the mesh's namespaces, so nothing is added to the host's
//! own network, and the cluster namespace has no route anywhere else.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::cluster::{GATEWAY, SERVICE_CIDR};
use crate::netns::{self, run};
use crate::RuntimeError;

pub struct ClusterNetwork {
    /// `tsr-<mesh>-`: every namespace of this mesh.
    prefix: String,
    /// The last service rules written, to skip unchanged rewrites.
    rules: Mutex<String>,
}

impl ClusterNetwork {
    pub fn cluster_ns(prefix: &str) -> String {
        format!("{prefix}cluster")
    }

    /// Creates the cluster namespace and its bridge.
    pub fn create(prefix: &str) -> Result<ClusterNetwork, RuntimeError> {
        let ns = Self::cluster_ns(prefix);
        netns::add(&ns)?;
        let gw = format!("{GATEWAY}/16");
        for argv in [
            vec!["ip", "-n", &ns, "link", "add", "br0", "type", "bridge"],
            vec!["ip", "-n", &ns, "addr", "add", &gw, "dev", "br0"],
            vec!["ip", "-n", &ns, "link", "set", "br0", "up"],
            // A route for the VIPs, so connections made here (published ports) pass the
            // routing decision before the DNAT rewrites them; no route leads anywhere else.
            vec!["ip", "-n", &ns, "route", "add", SERVICE_CIDR, "dev", "br0"],
            vec![
                "ip",
                "netns",
                "exec",
                &ns,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ],
        ] {
            run(&argv, None)?;
        }
        let net = ClusterNetwork {
            prefix: prefix.to_string(),
            rules: Mutex::new(String::new()),
        };
        Ok(net)
    }

    pub fn namespace(&self) -> String {
        Self::cluster_ns(&self.prefix)
    }

    /// A pod's namespace, on the bridge with `ip`; its only route leads to the services.
    pub fn attach(&self, pod_ns: &str, veth: &str, ip: Ipv4Addr) -> Result<(), RuntimeError> {
        let cluster = self.namespace();
        netns::add(pod_ns)?;
        let addr = format!("{ip}/16");
        let gw = GATEWAY.to_string();
        for argv in [
            vec![
                "ip", "-n", &cluster, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                "netns", pod_ns,
            ],
            vec![
                "ip", "-n", &cluster, "link", "set", veth, "master", "br0", "up",
            ],
            // Hairpin (kubelet's hairpin-veth): a pod reaching its own Service is DNATed
            // back to itself, through the port it came in on.
            vec![
                "ip",
                "-n",
                &cluster,
                "link",
                "set",
                veth,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ],
            vec!["ip", "-n", pod_ns, "addr", "add", &addr, "dev", "eth0"],
            vec!["ip", "-n", pod_ns, "link", "set", "eth0", "up"],
            vec![
                "ip",
                "-n",
                pod_ns,
                "route",
                "add",
                SERVICE_CIDR,
                "via",
                &gw,
                "dev",
                "eth0",
            ],
        ] {
            run(&argv, None)?;
        }
        Ok(())
    }

    /// Replaces the service NAT (one `iptables-restore`, atomic) when it changed.
    pub fn set_service_rules(&self, rules: &str) -> Result<bool, RuntimeError> {
        let mut last = self.rules.lock().unwrap();
        if *last == rules {
            return Ok(false);
        }
        run(
            &["ip", "netns", "exec", &self.namespace(), "iptables-restore"],
            Some(rules),
        )?;
        *last = rules.to_string();
        Ok(true)
    }
}

/// Installs a sidecar pod's capture rules in its namespace.
pub fn install_capture(pod_ns: &str, rules: &str) -> Result<(), RuntimeError> {
    run(
        &["ip", "netns", "exec", pod_ns, "iptables-restore"],
        Some(rules),
    )
}
