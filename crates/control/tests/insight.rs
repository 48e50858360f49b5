//! Operator insight on seed 002's topology at each policy step: the predicted matrix is
//! the seed's, `what-if` of the next step names the hops it breaks, and
//! `analyze` flags the DestinationRule that forces mTLS toward a plaintext-only server.

use std::collections::BTreeMap;

use tessera_control::insight::{self, analyze::code, Verdict};
use tessera_control::testing::{seed_002_worlds, PolicyApi};
use tessera_control::World;

/// sleep.<from> → httpbin.<to>:8000, per endpoint workload.
fn seed_matrix(world: &World) -> BTreeMap<(String, String), Vec<Verdict>> {
    insight::matrix(world, &[])
        .into_iter()
        .filter(|r| {
            r.client.starts_with("sleep-0.") && r.service.starts_with("httpbin.") && r.port == 8000
        })
        .map(|r| {
            let from = r.client.trim_start_matches("sleep-0.").to_string();
            let to = r.service.trim_start_matches("httpbin.").to_string();
            ((from, to), r.endpoints.iter().map(|e| e.verdict).collect())
        })
        .collect()
}

fn check(api: PolicyApi) {
    use Verdict::*;
    let worlds = seed_002_worlds(api);
    for (step, _, world) in &worlds {
        let got = seed_matrix(world);
        // httpbin.partial's endpoints: httpbin-0 (sidecar), httpbin-nosidecar-0.
        let full_to_full = match step.name {
            "1-permissive" | "2-strict" => Mtls,
            "3-plaintext" => Plaintext,
            _ => Unavailable,
        };
        let legacy_to_full = if step.name == "2-strict" {
            Refused
        } else {
            Plaintext
        };
        let want: BTreeMap<(String, String), Vec<Verdict>> = [
            (("full", "full"), vec![full_to_full]),
            (("full", "partial"), vec![Mtls, Plaintext]),
            (("full", "legacy"), vec![Plaintext]),
            (("legacy", "full"), vec![legacy_to_full]),
            (("legacy", "partial"), vec![Plaintext, Plaintext]),
            (("legacy", "legacy"), vec![Plaintext]),
        ]
        .into_iter()
        .map(|((a, b), v)| ((a.to_string(), b.to_string()), v))
        .collect();
        assert_eq!(got, want, "{api:?} {}", step.name);
    }

    // What-if, each step applied on the one before.
    let breaks = |i: usize| {
        let w = insight::what_if(&worlds[i - 1].2, &worlds[i].2, &[]);
        let mut b: Vec<String> = w
            .breaks
            .iter()
            .map(|c| {
                format!(
                    "{} -> {} {}: {} -> {}",
                    c.client, c.target, c.endpoint, c.before, c.after
                )
            })
            .collect();
        b.sort();
        (b, w)
    };
    let (b, w) = breaks(1);
    // Every pod is a client: the seed's sleep.legacy, and the other pods without a sidecar.
    assert_eq!(
        b,
        [
            "httpbin-0.legacy -> httpbin.full:8000 httpbin-0.full: plaintext -> refused",
            "httpbin-nosidecar-0.partial -> httpbin.full:8000 httpbin-0.full: plaintext -> refused",
            "sleep-0.legacy -> httpbin.full:8000 httpbin-0.full: plaintext -> refused",
        ],
        "{api:?} STRICT"
    );
    let legacy = w
        .breaks
        .iter()
        .find(|c| c.client == "sleep-0.legacy")
        .unwrap();
    assert!(
        legacy.fix.contains("inject a sidecar into sleep-0.legacy"),
        "{}",
        legacy.fix
    );
    let (b, w) = breaks(2);
    assert!(b.is_empty(), "{api:?} DISABLE breaks nothing: {b:?}");
    // Plaintext again for sleep.full, and legacy is let back in.
    assert_eq!(w.fixes.len(), 3, "{w:?}");
    assert!(w
        .changes
        .iter()
        .any(|c| c.client == "sleep-0.full" && c.before == Mtls && c.after == Plaintext));
    let (b, w) = breaks(3);
    // Every client with a sidecar takes the DestinationRule (it is exported everywhere).
    assert_eq!(
        b,
        [
            "httpbin-0.full -> httpbin.full:8000 httpbin-0.full: plaintext -> 503",
            "httpbin-0.partial -> httpbin.full:8000 httpbin-0.full: plaintext -> 503",
            "sleep-0.full -> httpbin.full:8000 httpbin-0.full: plaintext -> 503",
        ],
        "{api:?} DR"
    );
    assert!(w.breaks[0]
        .decided_by
        .iter()
        .any(|d| d == "DestinationRule full/httpbin-full-mtls"));

    // Analyze: nothing to say until the DestinationRule contradicts the server.
    for (step, _, world) in &worlds {
        let findings = insight::analyze(world);
        if step.name == "4-dr-istio-mutual" {
            assert_eq!(findings.len(), 1, "{findings:?}");
            assert_eq!(findings[0].code, code::MTLS_TO_PLAINTEXT);
            assert_eq!(
                findings[0].resource,
                "DestinationRule full/httpbin-full-mtls"
            );
            assert!(
                findings[0].message.contains("port 80 of httpbin-0.full"),
                "{}",
                findings[0].message
            );
            assert!(
                findings[0]
                    .fix
                    .contains("remove tls from DestinationRule full/httpbin-full-mtls"),
                "{}",
                findings[0].fix
            );
        } else {
            assert!(findings.is_empty(), "{api:?} {}: {findings:?}", step.name);
        }
    }
}

#[test]
fn seed_002_insight_with_peer_authentication() {
    check(PolicyApi::V1beta1);
}

#[test]
fn seed_002_insight_with_the_legacy_policy_api() {
    check(PolicyApi::V1alpha1);
}

#[test]
fn explain_finds_clients_by_deployment_and_services_by_name() {
    let worlds = seed_002_worlds(PolicyApi::V1beta1);
    let world = &worlds[1].2;
    let client = insight::find_client(world, "deploy/sleep.legacy").unwrap();
    assert_eq!(client.id(), "sleep-0.legacy");
    assert_eq!(
        insight::find_client(world, "sleep-0.legacy").unwrap().id(),
        "sleep-0.legacy"
    );
    assert!(insight::find_client(world, "deploy/nothing.legacy").is_err());
    let svc = insight::find_service(world, "httpbin.full").unwrap();
    let r = insight::explain(world, client, svc, Some(8000)).unwrap();
    assert_eq!(r.len(), 1);
    let e = &r[0].endpoints[0];
    assert_eq!(e.verdict, Verdict::Refused);
    assert_eq!(e.decided_by, ["PeerAuthentication full/httpbin"]);
    let err = insight::explain(world, client, svc, Some(9)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service httpbin.full has no port 9 (it has 8000)"
    );
}

/// seed 002's store with each `(namespace, manifests)` applied.
fn world_with(manifests: &[(&str, &str)]) -> World {
    use tessera_control::objects::Op;
    use tessera_control::testing::{at, load, seed_002_objects, seed_002_options};
    let ops = manifests
        .iter()
        .flat_map(|(ns, text)| load("extra.yaml", text, ns))
        .map(|resource| Op::Apply {
            origin: "extra.yaml".into(),
            resource,
        })
        .collect();
    let objects = seed_002_objects().plan(ops, at(1)).unwrap().next;
    World::build(&objects, &seed_002_options())
}

#[test]
fn analyze_names_each_ignored_or_conflicting_resource_and_a_fix() {
    // (portLevelMtls without a selector is refused by validation before it is stored.)
    let rooted = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: rooted}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: STRICT}
"#;
    let younger = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: a-default}
spec: {mtls: {mode: PERMISSIVE}}
"#;
    let older = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: z-default}
spec: {mtls: {mode: STRICT}}
"#;
    let full = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: httpbin}
spec:
  selector: {matchLabels: {app: httpbin}}
  mtls: {mode: STRICT}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: plain}
spec:
  host: httpbin.full.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: ingress}
spec:
  workloadSelector: {labels: {app: httpbin}}
  ingress:
  - port: {number: 9080, protocol: HTTPS, name: external}
    defaultEndpoint: 0.0.0.0:80
    tls: {mode: SIMPLE, privateKey: /etc/istio/tls.key, serverCertificate: /etc/istio/tls.crt}
"#;
    let world = world_with(&[
        ("istio-system", rooted),
        ("partial", older),
        ("partial", younger),
        ("full", full),
    ]);
    let findings = insight::analyze(&world);
    let find = |code: &str, resource: &str| {
        findings
            .iter()
            .find(|f| f.code == code && f.resource == resource)
            .unwrap_or_else(|| panic!("no {code} for {resource} in {findings:#?}"))
    };
    let rooted = find(
        code::POLICY_IGNORED,
        "PeerAuthentication istio-system/rooted",
    );
    assert!(rooted.message.contains("root namespace"), "{rooted:?}");
    assert!(
        rooted.fix.contains("move it to the workloads' namespace"),
        "{rooted:?}"
    );
    // Two namespace-wide policies in partial (applied in one batch): one applies, the
    // other is reported with the one that wins.
    let second = findings
        .iter()
        .find(|f| {
            f.code == code::POLICY_IGNORED && f.resource.starts_with("PeerAuthentication partial/")
        })
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(
        second.message.contains("only the oldest applies"),
        "{second:?}"
    );
    assert!(
        second.fix.contains("delete the younger policy"),
        "{second:?}"
    );
    let plain = find(code::PLAINTEXT_TO_STRICT, "DestinationRule full/plain");
    assert_eq!(plain.level, insight::Level::Error);
    assert!(
        plain
            .message
            .contains("port 80 of httpbin-0.full is STRICT"),
        "{plain:?}"
    );
    assert!(plain.message.contains("sleep-0.full"), "{plain:?}");
    assert!(
        plain
            .fix
            .contains("remove tls mode DISABLE from DestinationRule full/plain"),
        "{plain:?}"
    );
    let tls = find(code::INGRESS_TLS_IGNORED, "Sidecar full/ingress ingress[0]");
    assert!(
        tls.message.contains("ENABLE_TLS_ON_SIDECAR_INGRESS"),
        "{tls:?}"
    );
    assert!(
        tls.fix
            .contains("--set values.pilot.env.ENABLE_TLS_ON_SIDECAR_INGRESS=true"),
        "{tls:?}"
    );
}

#[test]
fn analyze_names_virtual_service_routes_that_are_never_used() {
    let vs = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin.full.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /status}}]
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /status}}, {uri: {prefix: /headers}}]
    route: [{destination: {host: httpbin}}]
  - name: default
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /delay}}]
    route: [{destination: {host: httpbin}}]
"#;
    let world = world_with(&[("full", vs)]);
    let found: Vec<(insight::Level, String, String)> = insight::analyze(&world)
        .into_iter()
        .filter(|f| f.code == code::SHADOWED_ROUTE)
        .inspect(|f| assert_eq!(f.resource, "VirtualService full/httpbin"))
        .map(|f| (f.level, f.message, f.fix))
        .collect();
    assert_eq!(
        found,
        [
            (
                insight::Level::Warning,
                "http[3] is never used: http[2] (\"default\") before it matches every request (a route after one without conditions is never tried)".to_string(),
                "move http[2] (\"default\") to the end of http, or give it a match that narrows it; routes are tried in order".to_string(),
            ),
            (
                insight::Level::Info,
                "http[1] match[0] is never used: http[0] before it has the same match (duplicate match)".to_string(),
                "remove match[0] from http[1]".to_string(),
            ),
        ]
    );
}

/// The matrix with the lock-down sample: sleep.full's GET /headers is allowed by the
/// policy, plaintext from legacy is denied (403), and the prediction names the policy.
#[test]
fn authorization_policies_in_the_matrix() {
    use tessera_control::objects::Op;
    use tessera_control::testing::{
        at, load, seed_002_objects, seed_002_options, AUTHZ_HTTPBIN_VIEWER,
    };
    let ops = load("viewer.yaml", AUTHZ_HTTPBIN_VIEWER, "full")
        .into_iter()
        .map(|resource| Op::Apply {
            origin: "viewer.yaml".into(),
            resource,
        })
        .collect();
    let objects = seed_002_objects().plan(ops, at(1)).unwrap().next;
    let world = World::build(&objects, &seed_002_options());
    let got = seed_matrix(&world);
    assert_eq!(got[&("full".into(), "full".into())], vec![Verdict::Mtls]);
    assert_eq!(
        got[&("legacy".into(), "full".into())],
        vec![Verdict::Denied]
    );
    // Others are not selected by the policy.
    assert_eq!(
        got[&("legacy".into(), "legacy".into())],
        vec![Verdict::Plaintext]
    );
    let reach = insight::matrix(&world, &[]);
    let hop = |from: &str| {
        reach
            .iter()
            .find(|r| {
                r.client == format!("sleep-0.{from}")
                    && r.service == "httpbin.full"
                    && r.port == 8000
            })
            .map(|r| r.endpoints[0].clone())
            .unwrap()
    };
    let allowed = hop("full");
    assert_eq!(
        allowed.authorization.as_deref(),
        Some("allowed by AuthorizationPolicy full/httpbin-viewer (rule 0)")
    );
    let denied = hop("legacy");
    assert_eq!(
        denied.why,
        "denied by AuthorizationPolicy full/httpbin-viewer: none of its ALLOW rules matched"
    );
    assert!(denied.fix.contains("no ALLOW rule"), "{}", denied.fix);
}

/// analyze on AuthorizationPolicies: a selector that picks nothing, a principal and a
/// namespace no workload has, HTTP-only fields on TCP ports, and a DENY-everything
/// policy that shadows an ALLOW one.
#[test]
fn analyze_authorization_policies() {
    use tessera_control::objects::Op;
    use tessera_control::testing::{at, load, seed_002_objects, seed_002_options};
    let text = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nothing}
spec:
  selector: {matchLabels: {app: nosuch}}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/full/sa/sleeep], namespaces: [ful]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules: [{}]
"#;
    let ops = load("lint.yaml", text, "full")
        .into_iter()
        .map(|resource| Op::Apply {
            origin: "lint.yaml".into(),
            resource,
        })
        .collect();
    let objects = seed_002_objects().plan(ops, at(1)).unwrap().next;
    let world = World::build(&objects, &seed_002_options());
    let found: Vec<(String, String)> = insight::analyze(&world)
        .into_iter()
        .map(|f| (f.code, format!("{}: {}", f.resource, f.message)))
        .collect();
    let has = |c: &str, text: &str| found.iter().any(|(code, m)| code == c && m.contains(text));
    assert!(
        has(
            code::AUTHZ_SELECTS_NOTHING,
            "AuthorizationPolicy full/nothing"
        ),
        "{found:?}"
    );
    assert!(
        has(
            code::AUTHZ_UNKNOWN_IDENTITY,
            "\"cluster.local/ns/full/sa/sleeep\""
        ),
        "{found:?}"
    );
    assert!(
        has(code::AUTHZ_UNKNOWN_IDENTITY, "namespace \"ful\""),
        "{found:?}"
    );
    assert!(
        has(
            code::AUTHZ_SHADOWED,
            "AuthorizationPolicy full/typo: AuthorizationPolicy full/deny-all denies every request"
        ),
        "{found:?}"
    );
    assert!(!has(code::AUTHZ_SELECTS_NOTHING, "full/typo"), "{found:?}");
}
