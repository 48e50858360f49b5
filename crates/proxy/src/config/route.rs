//! HTTP routing at a gateway (VirtualService semantics): virtual host by Host
//! header, first matching rule, weighted destination, rewrites and redirect locations.
//! Pure: built once per snapshot (regexes compiled there), looked up per request.

use http::HeaderMap;
use tessera_contract::config::{RouteAction, ValueMatch, VirtualHost, WeightedDestination};

#[derive(Debug)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
    Present,
}

impl Matcher {
    fn compile(m: &ValueMatch, case_insensitive: bool) -> Result<Matcher, String> {
        Ok(match m {
            ValueMatch::Exact(v) => Matcher::Exact(v.clone()),
            ValueMatch::Prefix(v) => Matcher::Prefix(v.clone()),
            ValueMatch::Present => Matcher::Present,
            ValueMatch::Regex(r) => {
                // RE2 semantics: the whole value must match.
                let anchored = format!("^(?:{r})$");
                let re = regex::RegexBuilder::new(&anchored)
                    .case_insensitive(case_insensitive)
                    .build()
                    .map_err(|e| format!("regex {r:?}: {e}"))?;
                Matcher::Regex(re)
            }
        })
    }

    /// `ignore_case` only for the URI with `ignoreUriCase`.
    pub fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            Matcher::Exact(v) if ignore_case => v.eq_ignore_ascii_case(value),
            Matcher::Exact(v) => v == value,
            Matcher::Prefix(p) if ignore_case => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            Matcher::Prefix(p) => value.starts_with(p.as_str()),
            Matcher::Regex(re) => re.is_match(value),
            Matcher::Present => true,
        }
    }
}

#[derive(Debug, Default)]
pub struct CompiledMatch {
    pub uri: Option<Matcher>,
    pub method: Option<Matcher>,
    pub authority: Option<Matcher>,
    pub scheme: Option<Matcher>,
    pub headers: Vec<(String, Matcher)>,
    pub without_headers: Vec<(String, Matcher)>,
    pub query_params: Vec<(String, Matcher)>,
    pub port: Option<u16>,
    pub ignore_uri_case: bool,
}

#[derive(Debug)]
pub struct CompiledRule {
    pub source: String,
    pub matches: Vec<CompiledMatch>,
    pub action: RouteAction,
}

#[derive(Debug)]
pub struct CompiledVhost {
    pub domains: Vec<String>,
    pub routes: Vec<CompiledRule>,
    pub https_redirect: bool,
}

/// What a rule looks at in a request.
pub struct RequestView<'a> {
    /// The path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
    /// The server port the request arrived on.
    pub port: u16,
}

pub fn compile(vhosts: &[VirtualHost]) -> Result<Vec<CompiledVhost>, String> {
    vhosts
        .iter()
        .map(|v| {
            let routes = v
                .routes
                .iter()
                .map(|r| {
                    let matches = r
                        .matches
                        .iter()
                        .map(|m| {
                            let one = |v: &Option<ValueMatch>, ci| {
                                v.as_ref().map(|v| Matcher::compile(v, ci)).transpose()
                            };
                            let many = |v: &[(String, ValueMatch)]| {
                                v.iter()
                                    .map(|(k, m)| Ok((k.clone(), Matcher::compile(m, false)?)))
                                    .collect::<Result<Vec<_>, String>>()
                            };
                            Ok(CompiledMatch {
                                uri: one(&m.uri, m.ignore_uri_case)?,
                                method: one(&m.method, false)?,
                                authority: one(&m.authority, false)?,
                                scheme: one(&m.scheme, false)?,
                                headers: many(&m.headers)?,
                                without_headers: many(&m.without_headers)?,
                                query_params: many(&m.query_params)?,
                                port: m.port,
                                ignore_uri_case: m.ignore_uri_case,
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(|e| format!("{}: {e}", r.source))?;
                    Ok(CompiledRule {
                        source: r.source.clone(),
                        matches,
                        action: r.action.clone(),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(CompiledVhost {
                domains: v.domains.clone(),
                routes,
                https_redirect: v.https_redirect,
            })
        })
        .collect()
}

/// The Host header without its port, lower-cased (ports are ignored on gateways).
pub fn host_of(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        authority
            .split(']')
            .next()
            .map_or(authority, |h| h)
            .to_string()
            + "]"
    } else {
        authority.split(':').next().unwrap_or(authority).to_string()
    };
    host.to_ascii_lowercase()
}

/// Envoy's virtual host choice: exact domain, then the longest `*.suffix`, then `*`.
pub fn find_vhost<'a>(vhosts: &'a [CompiledVhost], host: &str) -> Option<&'a CompiledVhost> {
    if let Some(v) = vhosts.iter().find(|v| v.domains.iter().any(|d| d == host)) {
        return Some(v);
    }
    let wildcard = vhosts
        .iter()
        .filter_map(|v| {
            v.domains
                .iter()
                .filter_map(|d| d.strip_prefix('*'))
                .filter(|suffix| {
                    !suffix.is_empty() && host.ends_with(suffix) && host.len() > suffix.len()
                })
                .map(str::len)
                .max()
                .map(|len| (len, v))
        })
        .max_by_key(|(len, _)| *len);
    if let Some((_, v)) = wildcard {
        return Some(v);
    }
    vhosts.iter().find(|v| v.domains.iter().any(|d| d == "*"))
}

fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

impl CompiledMatch {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        self.uri
            .as_ref()
            .is_none_or(|m| m.matches(req.path, self.ignore_uri_case))
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(req.method, false))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(req.authority, false))
            && self
                .scheme
                .as_ref()
                .is_none_or(|m| m.matches(req.scheme, false))
            && self.port.is_none_or(|p| p == req.port)
            && self
                .headers
                .iter()
                .all(|(name, m)| header(name).is_some_and(|v| m.matches(v, false)))
            && self
                .without_headers
                .iter()
                .all(|(name, m)| !header(name).is_some_and(|v| m.matches(v, false)))
            && self
                .query_params
                .iter()
                .all(|(name, m)| query_value(req.query, name).is_some_and(|v| m.matches(v, false)))
    }
}

/// The first rule with a matching entry (a rule without entries matches everything), and
/// the entry that matched (rewrites replace what it matched).
pub fn find_rule<'a>(
    vhost: &'a CompiledVhost,
    req: &RequestView<'_>,
) -> Option<(&'a CompiledRule, Option<&'a CompiledMatch>)> {
    vhost.routes.iter().find_map(|r| {
        if r.matches.is_empty() {
            return Some((r, None));
        }
        r.matches
            .iter()
            .find(|m| m.matches(req))
            .map(|m| (r, Some(m)))
    })
}

/// The destination for draw `n` (any counter): each gets `weight / Σ weights`; all
/// weights zero means the first.
pub fn pick(destinations: &[WeightedDestination], n: u64) -> Option<usize> {
    let total: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return (!destinations.is_empty()).then_some(0);
    }
    let mut point = n % total;
    for (i, d) in destinations.iter().enumerate() {
        if point < u64::from(d.weight) {
            return Some(i);
        }
        point -= u64::from(d.weight);
    }
    None
}

/// `rewrite.uri`: replaces the matched prefix; for exact and regex matches (and rules
/// without a URI match), the whole path. The query string is kept.
pub fn rewrite_path(
    path: &str,
    query: Option<&str>,
    matched: Option<&CompiledMatch>,
    to: &str,
) -> String {
    let rest = match matched.and_then(|m| m.uri.as_ref()) {
        Some(Matcher::Prefix(p)) => path.get(p.len()..).unwrap_or(""),
        _ => "",
    };
    let mut out = format!("{to}{rest}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The `location` of a redirect: each part from the rule, else from the request.
pub fn redirect_location(
    req: &RequestView<'_>,
    host: &str,
    uri: Option<&str>,
    authority: Option<&str>,
    scheme: Option<&str>,
    port: Option<u16>,
) -> String {
    let scheme = scheme.unwrap_or(req.scheme);
    let authority = authority.unwrap_or(host);
    let port = port.map_or(String::new(), |p| format!(":{p}"));
    let path = match uri {
        Some(u) => u.to_string(),
        None => match req.query {
            Some(q) => format!("{}?{q}", req.path),
            None => req.path.to_string(),
        },
    };
    format!("{scheme}://{authority}{port}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_contract::config::{HttpRouteRule, RequestMatch, RetryPolicy};

    fn forward(service: &str) -> RouteAction {
        RouteAction::Forward {
            destinations: vec![WeightedDestination {
                service: service.into(),
                weight: 1,
            }],
            rewrite_uri: None,
            rewrite_authority: None,
            timeout_ms: None,
            retries: RetryPolicy::default(),
        }
    }

    fn rule(source: &str, matches: Vec<RequestMatch>) -> HttpRouteRule {
        HttpRouteRule {
            source: source.into(),
            matches,
            action: forward(source),
        }
    }

    fn uri(m: ValueMatch) -> RequestMatch {
        RequestMatch {
            uri: Some(m),
            ..Default::default()
        }
    }

    fn view<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            path,
            query,
            method: "GET",
            authority: "httpbin.example.com",
            scheme: "https",
            headers,
            port: 443,
        }
    }

    fn table(domains: &[&str], rules: Vec<HttpRouteRule>) -> Vec<CompiledVhost> {
        compile(&[VirtualHost {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: rules,
            https_redirect: false,
        }])
        .unwrap()
    }

    #[test]
    fn virtual_service_rows() {
        let v = table(
            &["httpbin.example.com"],
            vec![
                rule(
                    "status",
                    vec![
                        uri(ValueMatch::Prefix("/status".into())),
                        uri(ValueMatch::Prefix("/delay".into())),
                    ],
                ),
                rule("hello", vec![uri(ValueMatch::Exact("/hello".into()))]),
                rule(
                    "teapot",
                    vec![uri(ValueMatch::Regex("/x/4[0-9]{2}".into()))],
                ),
                rule(
                    "v2",
                    vec![RequestMatch {
                        headers: vec![("x-version".into(), ValueMatch::Exact("v2".into()))],
                        ..Default::default()
                    }],
                ),
            ],
        );
        let h = HeaderMap::new();
        let mut v2 = HeaderMap::new();
        v2.insert("x-version", "v2".parse().unwrap());
        // (row, path, query, headers, expected rule)
        type Row<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            &'a HeaderMap,
            Option<&'a str>,
        );
        let rows: Vec<Row> = vec![
            ("VS-01 prefix", "/status/200", None, &h, Some("status")),
            ("VS-02 no match → 404", "/headers", None, &h, None),
            ("VS-05 raw prefix", "/statusXYZ", None, &h, Some("status")),
            (
                "second match entry ORed",
                "/delay/1",
                None,
                &h,
                Some("status"),
            ),
            (
                "VS-06 exact ignores the query",
                "/hello",
                Some("x=1"),
                &h,
                Some("hello"),
            ),
            ("VS-06 exact is exact", "/hello/", None, &h, None),
            ("VS-07 regex full match", "/x/418", None, &h, Some("teapot")),
            ("VS-07 regex is anchored", "/y/x/418", None, &h, None),
            ("VS-08 header match", "/other", None, &v2, Some("v2")),
        ];
        let vh = &v[0];
        for (row, path, query, headers, want) in rows {
            let got = find_rule(vh, &view(path, query, headers)).map(|(r, _)| r.source.as_str());
            assert_eq!(got, want, "{row}");
        }
    }

    #[test]
    fn virtual_hosts_follow_envoys_order() {
        let v = compile(&[
            VirtualHost {
                domains: vec!["*".into()],
                routes: vec![],
                https_redirect: false,
            },
            VirtualHost {
                domains: vec!["*.example.com".into()],
                routes: vec![],
                https_redirect: false,
            },
            VirtualHost {
                domains: vec!["*.b.example.com".into()],
                routes: vec![],
                https_redirect: false,
            },
            VirtualHost {
                domains: vec!["httpbin.example.com".into()],
                routes: vec![],
                https_redirect: false,
            },
        ])
        .unwrap();
        let pick = |h: &str| find_vhost(&v, &host_of(h)).map(|v| v.domains[0].clone());
        assert_eq!(
            pick("httpbin.example.com:443").as_deref(),
            Some("httpbin.example.com")
        );
        assert_eq!(
            pick("HTTPBIN.example.com").as_deref(),
            Some("httpbin.example.com")
        );
        assert_eq!(pick("a.b.example.com").as_deref(), Some("*.b.example.com"));
        assert_eq!(pick("a.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(pick("example.com").as_deref(), Some("*"));
        let only_exact = table(&["httpbin.example.com"], vec![]);
        assert!(
            find_vhost(&only_exact, "other.example.com").is_none(),
            "VS-04: other host → 404"
        );
    }

    #[test]
    fn weights_split_in_proportion() {
        let v = table(&["*"], vec![]);
        let _ = v;
        let r = &compile(&[VirtualHost {
            domains: vec!["*".into()],
            routes: vec![HttpRouteRule {
                source: "w".into(),
                matches: vec![],
                action: RouteAction::Forward {
                    destinations: vec![
                        WeightedDestination {
                            service: "a:80".into(),
                            weight: 90,
                        },
                        WeightedDestination {
                            service: "b:80".into(),
                            weight: 10,
                        },
                    ],
                    rewrite_uri: None,
                    rewrite_authority: None,
                    timeout_ms: None,
                    retries: RetryPolicy::default(),
                },
            }],
            https_redirect: false,
        }])
        .unwrap()[0]
            .routes[0];
        let RouteAction::Forward { destinations, .. } = &r.action else {
            unreachable!()
        };
        let b = (0..1000)
            .filter(|n| pick(destinations, *n) == Some(1))
            .count();
        assert_eq!(b, 100, "VS-09: 90/10 over 1000 draws");
    }

    #[test]
    fn rewrites_and_redirects() {
        let v = table(
            &["*"],
            vec![rule("api", vec![uri(ValueMatch::Prefix("/api".into()))])],
        );
        let h = HeaderMap::new();
        let req = view("/api/items", Some("a=1"), &h);
        let (_, m) = find_rule(&v[0], &req).unwrap();
        assert_eq!(
            rewrite_path(req.path, req.query, m, "/"),
            "//items?a=1",
            "VS-10: raw prefix rewrite"
        );
        assert_eq!(rewrite_path(req.path, None, m, "/v2"), "/v2/items");
        assert_eq!(
            redirect_location(
                &req,
                "httpbin.example.com",
                Some("/new"),
                Some("a.example.com"),
                None,
                None
            ),
            "https://a.example.com/new",
            "VS-13: scheme kept"
        );
        let plain = RequestView {
            scheme: "http",
            ..view("/status/200", None, &h)
        };
        assert_eq!(
            redirect_location(
                &plain,
                "httpbin.example.com",
                None,
                None,
                Some("https"),
                None
            ),
            "https://httpbin.example.com/status/200",
            "GW-19: httpsRedirect"
        );
    }

    #[test]
    fn a_bad_regex_is_refused_with_its_source() {
        let err = compile(&[VirtualHost {
            domains: vec!["*".into()],
            routes: vec![rule(
                "VirtualService default/x http[0]",
                vec![uri(ValueMatch::Regex("(".into()))],
            )],
            https_redirect: false,
        }])
        .unwrap_err();
        assert!(
            err.contains("VirtualService default/x http[0]") && err.contains("regex"),
            "{err}"
        );
    }
}
