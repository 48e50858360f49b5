//! Traffic capture for a sidecar pod, as `istio-iptables` sets it up: the init container's
//! arguments become a [`Capture`], and the capture becomes an `iptables-restore` input for
//! the pod's network namespace. Pure, so the rules are tested as text.

use std::fmt::Write;

use tessera_model::names::PROXY_UID;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// Outbound listener (`-p`, Istio's 15001).
    pub outbound_port: u16,
    /// Inbound listener (`-z`, Istio's 15006).
    pub inbound_port: u16,
    /// The proxy's uid and gid (`-u`/`-g`): their connections are not captured.
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// Inbound ports to capture (`-b`): `None` is every port (`*`).
    pub inbound_ports: Option<Vec<u16>>,
    /// Inbound ports left alone (`-d`).
    pub inbound_excluded: Vec<u16>,
    /// Outbound destinations to capture (`-i`): `None` is everything (`*`).
    pub outbound_cidrs: Option<Vec<String>>,
    /// Outbound destinations left alone (`-x`).
    pub outbound_excluded_cidrs: Vec<String>,
    /// Outbound ports left alone (`-o`).
    pub outbound_excluded_ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("istio-iptables: {flag}: {why}")]
    Arg { flag: String, why: String },
}

impl Capture {
    /// Reads `istio-iptables` arguments (the injected init container's `args`, with or
    /// without the leading `istio-iptables`).
    pub fn from_args(args: &[String]) -> Result<Capture, CaptureError> {
        let mut c = Capture {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: PROXY_UID,
            proxy_gid: PROXY_UID,
            inbound_ports: None,
            inbound_excluded: vec![],
            outbound_cidrs: None,
            outbound_excluded_cidrs: vec![],
            outbound_excluded_ports: vec![],
        };
        let mut gid_set = false;
        let mut it = args
            .iter()
            .skip_while(|a| a.as_str() == "istio-iptables")
            .peekable();
        while let Some(flag) = it.next() {
            let err = |why: String| CaptureError::Arg {
                flag: flag.clone(),
                why,
            };
            let value = it
                .next()
                .ok_or_else(|| err("needs a value".into()))?
                .as_str();
            let port = |v: &str| {
                v.trim()
                    .parse::<u16>()
                    .map_err(|_| err(format!("{v:?} is not a port")))
            };
            let ports = |v: &str| -> Result<Vec<u16>, CaptureError> {
                v.split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(port)
                    .collect()
            };
            let cidrs = |v: &str| -> Vec<String> {
                v.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect()
            };
            match flag.as_str() {
                "-p" => c.outbound_port = port(value)?,
                "-z" => c.inbound_port = port(value)?,
                "-u" => {
                    c.proxy_uid = value
                        .parse()
                        .map_err(|_| err(format!("{value:?} is not a uid")))?;
                    if !gid_set {
                        c.proxy_gid = c.proxy_uid;
                    }
                }
                "-g" => {
                    c.proxy_gid = value
                        .parse()
                        .map_err(|_| err(format!("{value:?} is not a gid")))?;
                    gid_set = true;
                }
                "-m" if value == "REDIRECT" => {}
                "-m" => return Err(err(format!("mode {value:?}: only REDIRECT is supported"))),
                "-b" if value.trim() == "*" => c.inbound_ports = None,
                "-b" => c.inbound_ports = Some(ports(value)?),
                "-d" => c.inbound_excluded = ports(value)?,
                "-i" if value.trim() == "*" => c.outbound_cidrs = None,
                "-i" => c.outbound_cidrs = Some(cidrs(value)),
                "-x" => c.outbound_excluded_cidrs = cidrs(value),
                "-o" => c.outbound_excluded_ports = ports(value)?,
                _ => return Err(err("unknown flag".into())),
            }
        }
        Ok(c)
    }

    /// The pod's whole `nat` table, in `iptables-restore` form (Istio's chain names).
    pub fn rules(&self) -> String {
        let mut r = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n\
             :ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n",
        );
        let line = |r: &mut String, s: String| {
            r.push_str(&s);
            r.push('\n');
        };
        line(&mut r, "-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
        line(&mut r, "-A OUTPUT -p tcp -j ISTIO_OUTPUT".into());
        // Inbound: everything (or the listed ports) to the inbound listener.
        match &self.inbound_ports {
            None => {
                for p in &self.inbound_excluded {
                    line(
                        &mut r,
                        format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN"),
                    );
                }
                line(
                    &mut r,
                    "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into(),
                );
            }
            Some(ports) => {
                for p in ports.iter().filter(|p| !self.inbound_excluded.contains(p)) {
                    line(
                        &mut r,
                        format!("-A ISTIO_INBOUND -p tcp --dport {p} -j ISTIO_IN_REDIRECT"),
                    );
                }
            }
        }
        line(
            &mut r,
            format!(
                "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
                self.inbound_port
            ),
        );
        // Outbound: the proxy's own traffic and loopback stay; a proxy calling its own pod
        // address goes to its inbound side (as in Istio).
        let (uid, gid) = (self.proxy_uid, self.proxy_gid);
        for rule in [
            "-s 127.0.0.6/32 -o lo -j RETURN".to_string(),
            format!("! -d 127.0.0.1/32 -o lo -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT"),
            format!("-o lo -m owner ! --uid-owner {uid} -j RETURN"),
            format!("-m owner --uid-owner {uid} -j RETURN"),
            format!("! -d 127.0.0.1/32 -o lo -m owner --gid-owner {gid} -j ISTIO_IN_REDIRECT"),
            format!("-o lo -m owner ! --gid-owner {gid} -j RETURN"),
            format!("-m owner --gid-owner {gid} -j RETURN"),
            "-d 127.0.0.1/32 -j RETURN".to_string(),
        ] {
            line(&mut r, format!("-A ISTIO_OUTPUT {rule}"));
        }
        for p in &self.outbound_excluded_ports {
            line(
                &mut r,
                format!("-A ISTIO_OUTPUT -p tcp --dport {p} -j RETURN"),
            );
        }
        for c in &self.outbound_excluded_cidrs {
            line(&mut r, format!("-A ISTIO_OUTPUT -d {c} -j RETURN"));
        }
        match &self.outbound_cidrs {
            None => line(&mut r, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into()),
            Some(cidrs) => {
                for c in cidrs {
                    line(&mut r, format!("-A ISTIO_OUTPUT -d {c} -j ISTIO_REDIRECT"));
                }
                line(&mut r, "-A ISTIO_OUTPUT -j RETURN".into());
            }
        }
        let _ = writeln!(
            r,
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        );
        r.push_str("COMMIT\n");
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn injected_arguments_capture_everything_but_the_proxy() {
        let c = Capture::from_args(&args(
            "istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x  -b * -d 15000,15090",
        ))
        .unwrap();
        assert_eq!(c.inbound_excluded, [15000, 15090]);
        let rules = c.rules();
        for want in [
            "-A ISTIO_INBOUND -p tcp --dport 15000 -j RETURN\n",
            "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n",
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n",
            "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN\n",
            "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN\n",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n",
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n",
        ] {
            assert!(rules.contains(want), "missing {want:?} in\n{rules}");
        }
        // The proxy's exemption comes before the catch-all redirect.
        let exempt = rules.find("--uid-owner 1337 -j RETURN").unwrap();
        let redirect = rules.find("-A ISTIO_OUTPUT -j ISTIO_REDIRECT").unwrap();
        assert!(exempt < redirect);
        assert!(rules.ends_with("COMMIT\n"));
    }

    #[test]
    fn listed_ports_and_ranges_narrow_the_capture() {
        let c = Capture::from_args(&args(
            "-p 15001 -z 15006 -u 1337 -g 1338 -b 80,9080 -d 9080 -i 10.96.0.0/16 -x 10.96.0.9/32 -o 5432",
        ))
        .unwrap();
        assert_eq!(c.proxy_gid, 1338);
        let rules = c.rules();
        assert!(rules.contains("--dport 80 -j ISTIO_IN_REDIRECT"));
        assert!(!rules.contains("--dport 9080 -j ISTIO_IN_REDIRECT"));
        assert!(rules.contains("-A ISTIO_OUTPUT -d 10.96.0.0/16 -j ISTIO_REDIRECT"));
        assert!(rules.contains("-A ISTIO_OUTPUT -d 10.96.0.9/32 -j RETURN"));
        assert!(rules.contains("-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN"));
        assert!(rules.contains("--gid-owner 1338"));
    }

    #[test]
    fn bad_arguments_are_named() {
        for (a, want) in [
            ("-p x", "-p: \"x\" is not a port"),
            ("-m TPROXY", "only REDIRECT"),
            ("-q 1", "-q: unknown flag"),
            ("-p", "-p: needs a value"),
        ] {
            let e = Capture::from_args(&args(a)).unwrap_err().to_string();
            assert!(e.contains(want), "{a}: {e}");
        }
    }
}
