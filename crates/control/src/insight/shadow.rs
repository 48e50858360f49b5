//! Routes of a VirtualService that are never used. Routes are tried in order and the first
//! that matches wins, so a route is dead when one before it matches every request (no
//! match, or a match with no condition but the path `/`), or when each of its matches
//! repeats one of an earlier route; a single repeated match is dead while its route lives
//! on through its other matches. Pure, over one VirtualService's spec.

use tessera_model::istio::{HttpMatchRequest, L4MatchAttributes, VirtualServiceSpec};

/// One route, or one match of a route, that is never used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The whole route is never used (else only one of its matches).
    pub route_unused: bool,
    pub message: String,
    pub fix: String,
}

/// A route as the check sees it: its name, if any, and its matches.
struct Route<'a, M> {
    name: Option<&'a str>,
    matches: &'a [M],
}

/// How one kind of match is compared.
struct MatchKind<M> {
    /// `http`, `tls` or `tcp`.
    section: &'static str,
    matches_everything: fn(&M) -> bool,
    same: fn(&M, &M) -> bool,
}

pub fn shadowed(spec: &VirtualServiceSpec) -> Vec<Shadowed> {
    let mut out = Vec::new();
    let http: Vec<Route<HttpMatchRequest>> = spec
        .http
        .iter()
        .map(|r| Route {
            name: r.name.as_deref(),
            matches: &r.matches,
        })
        .collect();
    check(&http, &HTTP, &mut out);
    let tcp: Vec<Route<L4MatchAttributes>> = spec
        .tcp
        .iter()
        .map(|r| Route {
            name: None,
            matches: &r.matches,
        })
        .collect();
    check(&tcp, &TCP, &mut out);
    // A TLS route always has matches (SNI names); only repeats can shadow one.
    let tls: Vec<Route<_>> = spec
        .tls
        .iter()
        .map(|r| Route {
            name: None,
            matches: &r.matches,
        })
        .collect();
    check(
        &tls,
        &MatchKind {
            section: "tls",
            matches_everything: |_| false,
            same: |a, b| a == b,
        },
        &mut out,
    );
    out
}

const HTTP: MatchKind<HttpMatchRequest> = MatchKind {
    section: "http",
    matches_everything: http_matches_everything,
    // The match's name and stats prefix do not change what it matches.
    same: |a, b| {
        let unnamed = |m: &HttpMatchRequest| HttpMatchRequest {
            name: None,
            stat_prefix: None,
            ..m.clone()
        };
        unnamed(a) == unnamed(b)
    },
};

const TCP: MatchKind<L4MatchAttributes> = MatchKind {
    section: "tcp",
    matches_everything: |m| *m == L4MatchAttributes::default(),
    same: |a, b| a == b,
};

/// No condition but, at most, any path (prefix `/` or regex `.*`).
fn http_matches_everything(m: &HttpMatchRequest) -> bool {
    let any_path = match &m.uri {
        None => true,
        Some(u) => {
            u.exact.is_none()
                && (u.prefix.as_deref() == Some("/") && u.regex.is_none()
                    || u.regex.as_deref() == Some(".*") && u.prefix.is_none())
        }
    };
    any_path
        && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.query_params.is_empty()
        && m.without_headers.is_empty()
        && m.port.is_none()
        && m.source_labels.is_empty()
        && m.gateways.is_empty()
        && m.source_namespace.is_none()
}

fn label(section: &str, i: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{section}[{i}] ({n:?})"),
        None => format!("{section}[{i}]"),
    }
}

fn check<M>(routes: &[Route<M>], kind: &MatchKind<M>, out: &mut Vec<Shadowed>) {
    let section = kind.section;
    let name = |i: usize| label(section, i, routes[i].name);
    let mut catch_all: Option<usize> = None;
    // Every match seen so far: (the match, its route, its index in the route).
    let mut seen: Vec<(&M, usize, usize)> = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let this = name(i);
        if let Some(first) = catch_all.map(name) {
            let why = if route.matches.is_empty() {
                "only the last route may have no match"
            } else {
                "a route after one without conditions is never tried"
            };
            out.push(Shadowed {
                route_unused: true,
                message: format!("{this} is never used: {first} before it matches every request ({why})"),
                fix: format!("move {first} to the end of {section}, or give it a match that narrows it; routes are tried in order"),
            });
            continue;
        }
        if route.matches.is_empty() || route.matches.iter().any(kind.matches_everything) {
            catch_all = Some(i);
        }
        // (this match, the route and match it repeats)
        let mut repeats: Vec<(usize, usize, usize)> = Vec::new();
        for (j, m) in route.matches.iter().enumerate() {
            match seen.iter().find(|(e, _, _)| (kind.same)(e, m)) {
                Some(&(_, r, k)) => repeats.push((j, r, k)),
                None => seen.push((m, i, j)),
            }
        }
        if !route.matches.is_empty() && repeats.len() == route.matches.len() {
            let mut earlier: Vec<usize> = repeats.iter().map(|&(_, r, _)| r).collect();
            earlier.sort_unstable();
            earlier.dedup();
            let names: Vec<String> = earlier.iter().map(|&r| name(r)).collect();
            out.push(Shadowed {
                route_unused: true,
                message: format!(
                    "{this} is never used: each of its matches is already in a route before it ({}): all matches used by prior routes",
                    names.join(", ")
                ),
                fix: format!("remove {this}, or move it before {} if it should win", names[0]),
            });
            continue;
        }
        for (j, r, k) in repeats {
            let earlier = if r == i {
                format!("its own match[{k}]")
            } else {
                format!("{} before it", name(r))
            };
            out.push(Shadowed {
                route_unused: false,
                message: format!(
                    "{this} match[{j}] is never used: {earlier} has the same match (duplicate match)"
                ),
                fix: format!("remove match[{j}] from {this}"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> VirtualServiceSpec {
        serde_norway::from_str(yaml).unwrap()
    }

    fn messages(yaml: &str) -> Vec<(bool, String)> {
        shadowed(&spec(yaml))
            .into_iter()
            .map(|s| (s.route_unused, s.message))
            .collect()
    }

    /// (case, spec, [(whole route unused, message)])
    type Case = (&'static str, &'static str, &'static [(bool, &'static str)]);

    #[test]
    fn shadowed_routes_and_matches() {
        let cases: &[Case] = &[
            (
                "catch-all last",
                "http:\n- match: [{uri: {prefix: /a}}]\n- match: [{uri: {prefix: /b}}]\n- {}",
                &[],
            ),
            (
                "a route without match, then one with",
                "http:\n- name: all\n- match: [{uri: {prefix: /b}}]",
                &[(true, "http[1] is never used: http[0] (\"all\") before it matches every request (a route after one without conditions is never tried)")],
            ),
            (
                "two routes without match",
                "http:\n- {}\n- name: second",
                &[(true, "http[1] (\"second\") is never used: http[0] before it matches every request (only the last route may have no match)")],
            ),
            (
                "a match on any path",
                "http:\n- match: [{uri: {prefix: /}}]\n- match: [{uri: {prefix: /b}}]\n- match: [{uri: {regex: \".*\"}}]",
                &[
                    (true, "http[1] is never used: http[0] before it matches every request (a route after one without conditions is never tried)"),
                    (true, "http[2] is never used: http[0] before it matches every request (a route after one without conditions is never tried)"),
                ],
            ),
            (
                "a match on any path for some clients only",
                "http:\n- match: [{uri: {prefix: /}, sourceLabels: {app: a}}]\n- match: [{uri: {prefix: /b}}]",
                &[],
            ),
            (
                "a repeated match",
                "http:\n- match: [{uri: {prefix: /a}}]\n- match: [{uri: {prefix: /a}, name: again}, {uri: {prefix: /c}}]",
                &[(false, "http[1] match[0] is never used: http[0] before it has the same match (duplicate match)")],
            ),
            (
                "all matches repeated",
                "http:\n- match: [{uri: {prefix: /a}}]\n- match: [{uri: {prefix: /b}}]\n- match: [{uri: {prefix: /b}}, {uri: {prefix: /a}}]",
                &[(true, "http[2] is never used: each of its matches is already in a route before it (http[0], http[1]): all matches used by prior routes")],
            ),
            (
                "a match repeated in its own route",
                "http:\n- match: [{uri: {exact: /c}}, {uri: {exact: /c}}]",
                &[(false, "http[0] match[1] is never used: its own match[0] has the same match (duplicate match)")],
            ),
            (
                "different header values are different matches",
                "http:\n- match: [{headers: {x: {exact: \"1\"}}}]\n- match: [{headers: {x: {exact: \"2\"}}}]",
                &[],
            ),
            (
                "tcp routes",
                "tcp:\n- route: []\n- match: [{port: 5432}]",
                &[(true, "tcp[1] is never used: tcp[0] before it matches every request (a route after one without conditions is never tried)")],
            ),
            (
                "tls routes with the same SNI names",
                "tls:\n- match: [{sniHosts: [a.example.com]}]\n- match: [{sniHosts: [a.example.com]}]",
                &[(true, "tls[1] is never used: each of its matches is already in a route before it (tls[0]): all matches used by prior routes")],
            ),
        ];
        for (name, yaml, want) in cases {
            let want: Vec<(bool, String)> = want.iter().map(|(u, m)| (*u, m.to_string())).collect();
            assert_eq!(messages(yaml), want, "{name}");
        }
    }

    #[test]
    fn each_finding_says_how_to_fix_it() {
        let found = shadowed(&spec("http:\n- {}\n- match: [{uri: {prefix: /b}}]\n- match: [{uri: {exact: /c}}, {uri: {exact: /c}}]"));
        assert_eq!(
            found[0].fix,
            "move http[0] to the end of http, or give it a match that narrows it; routes are tried in order"
        );
        let dup = shadowed(&spec("http:\n- match: [{uri: {exact: /c}}]\n- match: [{uri: {exact: /c}}, {uri: {exact: /d}}]"));
        assert_eq!(dup[0].fix, "remove match[0] from http[1]");
        let all = shadowed(&spec(
            "http:\n- match: [{uri: {exact: /c}}]\n- match: [{uri: {exact: /c}}]",
        ));
        assert_eq!(
            all[0].fix,
            "remove http[1], or move it before http[0] if it should win"
        );
    }
}
