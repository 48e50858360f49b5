//! What the running mesh shows, read from inside the pods:
//! - [`probe`] (`check reachability --probe`): each predicted client → service port
//!   measured with real requests, made with curl from inside the client pod (the seed's
//!   own measurement: `curl http://svc.ns:port/headers`, the XFCC URI showing mTLS);
//! - [`edge_reports`] (`tessera edges`): every sidecar's admin `/edges`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_control::insight::{PortReach, Verdict};

/// What one request showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// `None` when the request cannot tell (the app answered without echoing headers, or
    /// nothing listens behind a working hop).
    pub verdict: Option<Verdict>,
    /// What was seen: `200 with the client's SPIFFE URI`, `curl exit 56`, ...
    pub seen: String,
}

/// From curl's output (`-w "\nresponse code: %{http_code}\n"`) and exit code.
pub fn classify(exit: i32, stdout: &str) -> Observation {
    let code = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("response code: "))
        .unwrap_or("000")
        .trim()
        .to_string();
    let seen = |verdict, seen: String| Observation { verdict, seen };
    if code == "000" {
        return match exit {
            7 => seen(None, "curl exit 7: nothing listens behind the hop".into()),
            52 | 56 => seen(
                Some(Verdict::Refused),
                format!("curl exit {exit}: connection reset"),
            ),
            _ => seen(None, format!("curl exit {exit}, no response")),
        };
    }
    if code == "503" && stdout.contains("hop: outbound") {
        if stdout.contains("nothing listens there") {
            return seen(None, "503: nothing listens at the endpoint".into());
        }
        return seen(
            Some(Verdict::Unavailable),
            "503 from the client's sidecar".into(),
        );
    }
    if code == "503" && stdout.contains("hop: inbound") {
        // The server's sidecar took the hop and says how; only its app is missing.
        let verdict = if stdout.contains(" over mtls") {
            Verdict::Mtls
        } else {
            Verdict::Plaintext
        };
        return seen(
            Some(verdict),
            format!("503 from the server's sidecar over {verdict} (its app does not answer)"),
        );
    }
    if code == "403" && stdout.contains("RBAC: access denied") {
        return seen(
            Some(Verdict::Denied),
            "403 RBAC: access denied from the server's sidecar".into(),
        );
    }
    if stdout.contains("URI=spiffe://") {
        return seen(
            Some(Verdict::Mtls),
            format!("{code} with the client's SPIFFE URI"),
        );
    }
    if stdout.contains("\"headers\"") {
        return seen(
            Some(Verdict::Plaintext),
            format!("{code} without a client identity"),
        );
    }
    seen(
        None,
        format!("{code} (the app does not echo request headers: TLS not visible)"),
    )
}

/// Whether the observations agree with the predicted verdicts: nothing unpredicted was
/// seen, and every predicted verdict was seen (one that works may be covered by an
/// observation that cannot tell).
pub fn agrees(predicted: &BTreeSet<Verdict>, observed: &[Observation]) -> bool {
    let seen: BTreeSet<Verdict> = observed.iter().filter_map(|o| o.verdict).collect();
    let undecided = observed.iter().any(|o| o.verdict.is_none());
    seen.is_subset(predicted)
        && predicted
            .iter()
            .all(|v| seen.contains(v) || (undecided && v.works()))
        && (!undecided || predicted.iter().any(|v| v.works()))
}

/// The measurement of one client → service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probed {
    pub observations: Vec<Observation>,
    pub agrees: bool,
}

impl Probed {
    /// The verdicts seen, each once, then what could not tell.
    pub fn summary(&self) -> String {
        let verdicts: BTreeSet<Verdict> =
            self.observations.iter().filter_map(|o| o.verdict).collect();
        let mut parts: Vec<String> = verdicts.iter().map(|v| v.to_string()).collect();
        if self.observations.iter().any(|o| o.verdict.is_none()) {
            parts.push("answered".into());
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Requests from the client pod until every predicted verdict was seen or the budget
/// (four per endpoint, at least four, at most 24) is spent. Round robin and random
/// load balancing both reach every endpoint of a small service well within it.
pub fn probe(state_dir: &Path, reach: &PortReach) -> Result<Probed, String> {
    let (pod, ns) = reach
        .client
        .rsplit_once('.')
        .ok_or_else(|| format!("bad pod id {}", reach.client))?;
    let url = format!("http://{}:{}/headers", reach.service, reach.port);
    let predicted = reach.verdicts();
    let budget = (reach.endpoints.len() * 4).clamp(4, 24);
    let mut observations = Vec::new();
    for _ in 0..budget {
        let argv: Vec<String> = [
            "curl",
            "-s",
            "--max-time",
            "5",
            &url,
            "-w",
            "\nresponse code: %{http_code}\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut pc =
            crate::exec::command(state_dir, ns, pod, None, &argv).map_err(|e| e.to_string())?;
        let out = pc
            .cmd
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("curl in {ns}/{pod}: {e} (install curl)"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut seen = classify(out.status.code().unwrap_or(-1), &stdout);
        // On a port declared TCP the sidecars carry opaque bytes and add no XFCC: the
        // app's echo cannot tell mTLS from plaintext.
        if reach.protocol == "tcp"
            && matches!(seen.verdict, Some(Verdict::Mtls | Verdict::Plaintext))
        {
            seen = Observation {
                verdict: None,
                seen: format!(
                    "{} (a TCP port: the TLS is not visible to the app)",
                    seen.seen
                ),
            };
        }
        observations.push(seen);
        if agrees(&predicted, &observations) && observations.len() >= reach.endpoints.len() {
            break;
        }
    }
    Ok(Probed {
        agrees: agrees(&predicted, &observations),
        observations,
    })
}

/// The `/edges` of every listed sidecar (`(namespace, pod)`); a proxy that does not
/// answer is reported, not fatal.
pub fn edge_reports(
    state_dir: &Path,
    pods: &[(String, String)],
) -> (Vec<tessera_contract::edges::EdgeReport>, Vec<String>) {
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for (ns, pod) in pods {
        match crate::exec::admin_get(state_dir, ns, pod, "/edges") {
            Ok(body) => match serde_json::from_str(&body) {
                Ok(r) => reports.push(r),
                Err(e) => errors.push(format!("{ns}/{pod}: /edges: {e}")),
            },
            Err(e) => errors.push(e.to_string()),
        }
    }
    (reports, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    #[test]
    fn curl_outcomes_are_classified_as_the_seed_reads_them() {
        let table: [(&str, i32, &str, Option<Verdict>); 8] = [
            ("mTLS", 0, "\"X-Forwarded-Client-Cert\": \"By=...;URI=spiffe://cluster.local/ns/full/sa/sleep\"\nresponse code: 200\n", Some(Mtls)),
            ("plaintext", 0, "{\"headers\": {\"Host\": \"httpbin.legacy:8000\"}}\nresponse code: 200\n", Some(Plaintext)),
            ("STRICT reset", 56, "\nresponse code: 000\n", Some(Refused)),
            ("client sidecar 503", 0, "upstream connect error or disconnect/reset before headers. hop: outbound sleep-0.full -> httpbin.full:8000 endpoint 10.0.0.2:80 using mesh mTLS (ISTIO_MUTUAL); phase: tls handshake; reason: x.\nresponse code: 503\n", Some(Unavailable)),
            ("no app behind a plaintext endpoint", 0, "upstream connect error or disconnect/reset before headers. hop: outbound sleep-0.full -> sleep.legacy:80 endpoint 10.0.0.9:80 using plaintext; phase: TCP connect; reason: connection refused by 10.0.0.9:80 (nothing listens there).\nresponse code: 503\n", None),
            ("no app behind the server sidecar", 0, "upstream connect error or disconnect/reset before headers. hop: inbound sleep-0.full (from 10.0.0.1 over mtls as spiffe://cluster.local/ns/full/sa/sleep) -> app 127.0.0.1:80; phase: connect; reason: refused\nresponse code: 503\n", Some(Mtls)),
            ("no app, no sidecars", 7, "\nresponse code: 000\n", None),
            ("an app that does not echo", 0, "<html>hello</html>\nresponse code: 200\n", None),
        ];
        for (row, exit, out, want) in table {
            assert_eq!(classify(exit, out).verdict, want, "{row}");
        }
    }

    #[test]
    fn agreement_needs_every_predicted_verdict_and_nothing_else() {
        let obs = |v: Option<Verdict>| Observation {
            verdict: v,
            seen: String::new(),
        };
        let both: BTreeSet<Verdict> = [Mtls, Plaintext].into();
        assert!(agrees(&both, &[obs(Some(Mtls)), obs(Some(Plaintext))]));
        assert!(!agrees(&both, &[obs(Some(Mtls))]));
        assert!(!agrees(
            &[Mtls].into(),
            &[obs(Some(Mtls)), obs(Some(Refused))]
        ));
        // An app that does not tell covers a working prediction, not a failing one.
        assert!(agrees(&[Mtls].into(), &[obs(None)]));
        assert!(!agrees(&[Refused].into(), &[obs(None)]));
    }
}
