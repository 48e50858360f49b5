//! The operator-insight verbs: `explain`, `check reachability`, `analyze [--what-if]`
//! and `edges`. The answers come from the control plane (the compiler) and, for probes
//! and edges, from inside the pods; this module only prints them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use tessera_control::api::{
    AnalyzeRequest, AnalyzeResponse, ExplainRequest, GetRequest, ReachabilityRequest,
    ReachabilityResponse,
};
use tessera_control::insight::{self, Edge, Finding, Level, PortReach, Verdict, WhatIf};
use tessera_model::kube::PodStatus;
use tessera_model::names::PROXY_CONTAINER;
use tessera_runtime::observe::{self, Probed};

use crate::kubectl::{fail, read_documents, runtime, Ctx};
use crate::table::Table;

/// istioctl analyze's exit code when it finds errors.
const FOUND_ISSUES: u8 = 79;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// The client: POD.NS, pod/POD.NS or deploy/NAME.NS
    from: String,
    /// The service: NAME.NS[:PORT] (every port when none is given)
    to: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Subcommand)]
pub enum CheckCommand {
    /// Every client workload × service port of the namespaces (-n, repeatable; default:
    /// all but istio-system): the verdict the compiler predicts per endpoint
    Reachability(ReachabilityArgs),
}

#[derive(Args)]
pub struct ReachabilityArgs {
    /// Also measure each prediction with real requests (curl from inside the client pod
    /// to http://SVC.NS:PORT/headers); exit 1 when any measurement disagrees
    #[arg(long)]
    probe: bool,
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Args)]
pub struct AnalyzeArgs {
    /// Evaluate this change (manifests; `-` for standard input) without applying it:
    /// which working connections it would break, fix or change, and why
    #[arg(long = "what-if", value_name = "FILE")]
    what_if: Vec<PathBuf>,
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Args)]
pub struct EdgesArgs {
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

fn json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

pub fn explain(ctx: &Ctx, args: &ExplainArgs) -> ExitCode {
    let (to, port) = match args.to.rsplit_once(':') {
        Some((svc, port)) => match port.parse::<u16>() {
            Ok(p) => (svc.to_string(), Some(p)),
            Err(_) => {
                eprintln!("error: {:?}: the port after ':' must be a number", args.to);
                return ExitCode::from(2);
            }
        },
        None => (args.to.clone(), None),
    };
    let req = ExplainRequest {
        from: with_namespace(&args.from, ctx),
        to: with_namespace(&to, ctx),
        port,
    };
    match runtime().block_on(ctx.client().explain(&req)) {
        Ok(r) if args.output == Output::Json => {
            json(&r);
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print!("{}", render_explain(&r));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `sleep` with `-n legacy` is `sleep.legacy`; a name with a namespace stays as it is.
fn with_namespace(name: &str, ctx: &Ctx) -> String {
    let bare = name.rsplit_once('/').map_or(name, |(_, n)| n);
    if bare.contains('.') {
        name.to_string()
    } else {
        format!("{name}.{}", ctx.namespace.as_deref().unwrap_or("default"))
    }
}

pub fn check(ctx: &Ctx, cmd: &CheckCommand) -> ExitCode {
    let CheckCommand::Reachability(args) = cmd;
    let req = ReachabilityRequest {
        namespaces: ctx.namespaces.clone(),
    };
    let resp = match runtime().block_on(ctx.client().reachability(&req)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let probed = if args.probe {
        let mut out = Vec::new();
        for reach in &resp.reach {
            match observe::probe(&ctx.state_dir, reach) {
                Ok(p) => out.push(p),
                Err(e) => {
                    eprintln!("error: probing {} -> {}: {e}", reach.client, reach.target());
                    return ExitCode::FAILURE;
                }
            }
        }
        Some(out)
    } else {
        None
    };
    if args.output == Output::Json {
        json(&serde_json::json!({"reachability": resp, "probed": probed}));
    } else {
        print!("{}", render_reachability(&resp, probed.as_deref()));
    }
    match probed {
        Some(p) if p.iter().any(|p| !p.agrees) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

pub fn analyze(ctx: &Ctx, args: &AnalyzeArgs) -> ExitCode {
    let documents = match read_documents(&args.what_if) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let req = AnalyzeRequest {
        documents,
        namespace: ctx.namespace.clone(),
    };
    let resp = match runtime().block_on(ctx.client().analyze(&req)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if args.output == Output::Json {
        json(&resp);
    } else {
        print!("{}", render_analyze(&resp));
        if let Some(w) = resp.what_if.as_ref().filter(|w| w.breaks_anything()) {
            // Which of those hops the sidecars have seen carry traffic.
            if let Ok(edges) = observed_edges(ctx) {
                print!("{}", render_live_breaks(&w.breaks, &edges));
            }
        }
    }
    let breaks = resp.what_if.as_ref().is_some_and(WhatIf::breaks_anything);
    let errors = if resp.what_if.is_some() {
        &resp.new_findings
    } else {
        &resp.findings
    };
    if breaks || errors.iter().any(|f| f.level == Level::Error) {
        ExitCode::from(FOUND_ISSUES)
    } else {
        ExitCode::SUCCESS
    }
}

/// Every sidecar's observed edges (admin `/edges`), joined and named by pod.
fn observed_edges(ctx: &Ctx) -> Result<Vec<Edge>, ExitCode> {
    let pods = match runtime().block_on(ctx.client().get(&GetRequest {
        kind: "pods".into(),
        name: None,
        namespace: None,
        all_namespaces: true,
        selector: None,
    })) {
        Ok(r) => r.items,
        Err(e) => return Err(fail(e)),
    };
    let mut addresses = BTreeMap::new();
    // Connections made through a Service address are masqueraded to the cluster
    // network's gateway by the runtime's service NAT: the client pod cannot be named.
    addresses.insert(
        IpAddr::V4(tessera_runtime::cluster::GATEWAY),
        "(via service NAT)".to_string(),
    );
    let mut sidecars = Vec::new();
    for p in &pods {
        let (Some(name), Some(ns)) = (
            p["metadata"]["name"].as_str(),
            p["metadata"]["namespace"].as_str(),
        ) else {
            continue;
        };
        let status: PodStatus = serde_json::from_value(p["status"].clone()).unwrap_or_default();
        let ip = status
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        if let Some(ip) = ip {
            addresses.insert(ip, format!("{name}.{ns}"));
        }
        let has_proxy = p["spec"]["containers"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == PROXY_CONTAINER));
        if has_proxy && ip.is_some() {
            sidecars.push((ns.to_string(), name.to_string()));
        }
    }
    let (reports, errors) = observe::edge_reports(&ctx.state_dir, &sidecars);
    for e in &errors {
        eprintln!("warning: {e}");
    }
    Ok(insight::join(&reports, &addresses))
}

pub fn edges(ctx: &Ctx, args: &EdgesArgs) -> ExitCode {
    let mut edges = match observed_edges(ctx) {
        Ok(e) => e,
        Err(code) => return code,
    };
    if !ctx.namespaces.is_empty() {
        let ns_of = |id: &str| id.rsplit_once('.').map(|(_, ns)| ns.to_string());
        edges.retain(|e| {
            ctx.namespaces
                .iter()
                .any(|ns| ns_of(&e.src).as_ref() == Some(ns) || ns_of(&e.dst).as_ref() == Some(ns))
        });
    }
    if args.output == Output::Json {
        json(&edges);
    } else {
        print!("{}", render_edges(&edges, unix_now()));
    }
    ExitCode::SUCCESS
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---- rendering ---------------------------------------------------------------------

/// `explain`: per port, per endpoint, both sides and the verdict.
pub fn render_explain(reports: &[PortReach]) -> String {
    let mut out = String::new();
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let name = r
            .port_name
            .as_deref()
            .map_or(String::new(), |n| format!(", port name {n}"));
        let _ = writeln!(out, "{} -> {} ({}{name})", r.client, r.target(), r.protocol);
        if r.client_sidecar {
            let _ = writeln!(
                out,
                "  client: {} with a sidecar, identity {}",
                r.client, r.client_identity
            );
        } else {
            let _ = writeln!(
                out,
                "  client: {} without a sidecar (its own bytes go out)",
                r.client
            );
        }
        if r.endpoints.is_empty() {
            let _ = writeln!(
                out,
                "  no endpoints: {}",
                if r.client_sidecar {
                    "the client's sidecar answers 503 (no healthy upstream)"
                } else {
                    "nothing answers the service address"
                }
            );
        }
        for e in &r.endpoints {
            let _ = writeln!(
                out,
                "  endpoint {} at {}: {}",
                e.workload, e.address, e.verdict
            );
            let _ = writeln!(out, "    client sends:  {}", e.client_sends.label());
            let _ = writeln!(out, "                   because {}", e.client_reason);
            let _ = writeln!(out, "    server takes:  {}", e.server_takes.label());
            let _ = writeln!(out, "                   because {}", e.server_reason);
            let _ = writeln!(out, "    verdict:       {}: {}", e.verdict, e.why);
            if let (Some(c), Some(s)) = (&e.client_identity, &e.server_identity) {
                let _ = writeln!(out, "    identities:    client {c}, server {s}");
            }
            let _ = writeln!(out, "    decided by:    {}", e.decided_by.join(", "));
            if let Some(a) = &e.authorization {
                let _ = writeln!(out, "    authorization: {a} (GET /headers)");
            }
            if !e.fix.is_empty() {
                let _ = writeln!(out, "    fix:           {}", e.fix);
            }
        }
    }
    out
}

/// The verdicts of a port's endpoints, each once, in endpoint order.
fn verdict_cell(r: &PortReach) -> String {
    if r.endpoints.is_empty() {
        return "no endpoints".into();
    }
    let mut seen = Vec::new();
    for e in &r.endpoints {
        if !seen.contains(&e.verdict) {
            seen.push(e.verdict);
        }
    }
    seen.iter()
        .map(Verdict::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `check reachability`: the matrix, what does not work and why, and with probes the
/// measurement beside each prediction.
pub fn render_reachability(resp: &ReachabilityResponse, probed: Option<&[Probed]>) -> String {
    let mut headers = vec!["FROM", "TO", "PREDICTED"];
    if probed.is_some() {
        headers.extend(["PROBED", "AGREE"]);
    }
    let mut t = Table::new(&headers);
    for (i, r) in resp.reach.iter().enumerate() {
        let mut row = vec![r.client.clone(), r.target(), verdict_cell(r)];
        if let Some(p) = probed.and_then(|p| p.get(i)) {
            row.push(p.summary());
            row.push(if p.agrees { "yes" } else { "NO" }.into());
        }
        t.row(row);
    }
    let mut out = format!(
        "Reachability at revision {} (namespaces: {}), predicted by the compiler{}:\n",
        resp.revision,
        resp.namespaces.join(", "),
        if probed.is_some() {
            ", probed with curl from each client pod"
        } else {
            ""
        }
    );
    out.push_str(&t.to_string());
    let mut counts: BTreeMap<Verdict, usize> = BTreeMap::new();
    let mut failing = Vec::new();
    for r in &resp.reach {
        for e in &r.endpoints {
            *counts.entry(e.verdict).or_default() += 1;
            if !e.verdict.works() {
                failing.push(format!(
                    "  {} -> {} at {}: {}: {} [{}]",
                    r.client,
                    r.target(),
                    e.workload,
                    e.verdict,
                    e.why,
                    e.decided_by.join(", ")
                ));
            }
        }
    }
    let hops: usize = counts.values().sum();
    let tally: Vec<String> = counts.iter().map(|(v, n)| format!("{n} {v}")).collect();
    let _ = writeln!(
        out,
        "\n{} client -> service ports, {hops} endpoint hops: {}",
        resp.reach.len(),
        if tally.is_empty() {
            "none".to_string()
        } else {
            tally.join(", ")
        }
    );
    if !failing.is_empty() {
        let _ = writeln!(out, "Not working ({}):", failing.len());
        for f in failing {
            let _ = writeln!(out, "{f}");
        }
    }
    if let Some(probed) = probed {
        let disagreements: Vec<(&PortReach, &Probed)> = resp
            .reach
            .iter()
            .zip(probed)
            .filter(|(_, p)| !p.agrees)
            .collect();
        if disagreements.is_empty() {
            let _ = writeln!(out, "Every probe agrees with the prediction.");
        } else {
            let _ = writeln!(out, "Disagreements ({}):", disagreements.len());
            for (r, p) in disagreements {
                let seen: BTreeSet<&str> = p.observations.iter().map(|o| o.seen.as_str()).collect();
                let _ = writeln!(
                    out,
                    "  {} -> {}: predicted {}, probed {} ({})",
                    r.client,
                    r.target(),
                    verdict_cell(r),
                    p.summary(),
                    seen.into_iter().collect::<Vec<_>>().join("; ")
                );
            }
        }
    }
    out
}

fn render_findings(out: &mut String, findings: &[Finding]) {
    for f in findings {
        let _ = writeln!(
            out,
            "{} [{}] ({}) {}",
            f.level, f.code, f.resource, f.message
        );
        let _ = writeln!(out, "    fix: {}", f.fix);
    }
}

/// The hops a change would break that carry traffic now, from the edges the sidecars have
/// seen: by the client pod, or (a client without a sidecar, whose connections through a
/// service address reach the server masqueraded) by the endpoint alone.
pub fn render_live_breaks(breaks: &[insight::Change], edges: &[Edge]) -> String {
    let mut out = String::new();
    let mut live = Vec::new();
    for c in breaks {
        let seen: u64 = edges
            .iter()
            .filter(|e| e.failure.is_none() && e.dst == c.endpoint)
            .filter(|e| e.src == c.client)
            .map(|e| e.connections)
            .sum();
        let masqueraded: u64 = edges
            .iter()
            .filter(|e| e.failure.is_none() && e.dst == c.endpoint && e.src == "(via service NAT)")
            .map(|e| e.connections)
            .sum();
        if seen > 0 {
            live.push(format!(
                "  {} -> {}: {seen} connections seen",
                c.client, c.endpoint
            ));
        } else if masqueraded > 0 && c.before == Verdict::Plaintext {
            live.push(format!(
                "  {} -> {}: plaintext through the service address seen ({masqueraded} connections, client not named)",
                c.client, c.endpoint
            ));
        }
    }
    if live.is_empty() {
        let _ = writeln!(
            out,
            "Live (seen by the sidecars): none of these hops has carried traffic."
        );
    } else {
        let _ = writeln!(
            out,
            "Live (seen by the sidecars), would break ({}):",
            live.len()
        );
        for l in live {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

/// `analyze`, and `analyze --what-if`.
pub fn render_analyze(resp: &AnalyzeResponse) -> String {
    let mut out = String::new();
    let Some(w) = &resp.what_if else {
        if resp.findings.is_empty() {
            let _ = writeln!(out, "No issues found (revision {}).", resp.revision);
        } else {
            render_findings(&mut out, &resp.findings);
        }
        return out;
    };
    let _ = writeln!(
        out,
        "What if (nothing is applied; planned on revision {}):",
        resp.revision
    );
    for o in &resp.planned {
        let _ = writeln!(out, "  {o}");
    }
    let section = |out: &mut String, title: &str, changes: &[insight::Change], detail: bool| {
        if changes.is_empty() {
            return;
        }
        let _ = writeln!(out, "{title} ({}):", changes.len());
        for c in changes {
            let _ = writeln!(
                out,
                "  {} -> {} at {}: {} -> {}",
                c.client, c.target, c.endpoint, c.before, c.after
            );
            if detail {
                let _ = writeln!(out, "    why:        {}", c.why);
                let _ = writeln!(out, "    decided by: {}", c.decided_by.join(", "));
                if !c.fix.is_empty() {
                    let _ = writeln!(out, "    fix:        {}", c.fix);
                }
            }
        }
    };
    if !w.breaks_anything() {
        let _ = writeln!(
            out,
            "Breaks no working connection ({} client -> endpoint hops compared).",
            w.compared
        );
    }
    section(&mut out, "Would break", &w.breaks, true);
    section(&mut out, "Would fix", &w.fixes, false);
    section(&mut out, "Would change security", &w.changes, true);
    if !resp.new_findings.is_empty() {
        let _ = writeln!(out, "New findings:");
        render_findings(&mut out, &resp.new_findings);
    }
    out
}

/// `spiffe://cluster.local/ns/full/sa/sleep` → `ns/full/sa/sleep`.
fn short_id(id: &Option<String>) -> String {
    match id {
        None => "-".into(),
        Some(id) => id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split_once('/'))
            .map_or(id.clone(), |(_, path)| path.to_string()),
    }
}

fn age(now: u64, then: u64) -> String {
    let secs = now.saturating_sub(then);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

/// `edges`: one row per source, destination, port, TLS and outcome.
pub fn render_edges(edges: &[Edge], now: u64) -> String {
    if edges.is_empty() {
        return "No connections seen yet.\n".into();
    }
    let mut t = Table::new(&[
        "SRC",
        "DST",
        "PORT",
        "TLS",
        "CLIENT_ID",
        "SERVER_ID",
        "SECURED",
        "CONNS",
        "LAST",
        "REASON",
    ]);
    for e in edges {
        let reason = match (&e.failure, e.secured) {
            (_, true) => "-".to_string(),
            (Some(f), _) => format!("{f}: {}", e.reason),
            (None, _) => e.reason.clone(),
        };
        t.row(vec![
            e.src.clone(),
            e.dst.clone(),
            e.port.to_string(),
            e.tls.clone(),
            short_id(&e.client_id),
            short_id(&e.server_id),
            if e.secured { "yes" } else { "no" }.into(),
            e.connections.to_string(),
            age(now, e.last_seen),
            reason,
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests;
