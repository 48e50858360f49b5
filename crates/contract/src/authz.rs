//! Authorization on mesh identities, as a proxy evaluates it: the control plane compiles
//! each AuthorizationPolicy that applies to a workload into precomputed matchers
//! ([`Authorization`]), and [`evaluate`] decides a request or a TCP connection with them.
//! `tessera explain` and `check reachability` call the same function, so they cannot
//! disagree with the data path.
//!
//! Istio's rules:
//! - DENY policies first: a request matching any rule of one is denied;
//! - then, if the workload has ALLOW policies, a request must match a rule of one, else it
//!   is denied; without ALLOW policies it is allowed;
//! - AUDIT policies mark what they match and change nothing;
//! - a rule matches when any of its `from`, any of its `to` and all of its `when` match (an
//!   absent part matches anything); a field matches when any of its values does and none of
//!   its `not` values does;
//! - principals come from the verified peer certificate only: plaintext has none;
//! - on TCP traffic, HTTP-only fields (hosts, methods, paths, request principals,
//!   `request.*` conditions) cannot be evaluated: an ALLOW rule that has one does not match
//!   (fail closed), a DENY rule ignores them (and so matches more).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The compiled policies that apply to one workload (or gateway), in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authorization {
    pub policies: Vec<AuthzPolicy>,
}

impl Authorization {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzPolicy {
    /// `namespace/name`.
    pub name: String,
    pub action: AuthzAction,
    /// Any one matching is a match; none (`spec: {}`): nothing matches.
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    Allow,
    Deny,
    Audit,
}

impl AuthzAction {
    pub fn name(self) -> &'static str {
        match self {
            AuthzAction::Allow => "ALLOW",
            AuthzAction::Deny => "DENY",
            AuthzAction::Audit => "AUDIT",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzRule {
    /// `None`: any caller. `Some`: any one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<SourceMatch>>,
    /// `None`: any operation. `Some`: any one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<OperationMatch>>,
    /// Every one must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<ConditionMatch>,
}

/// A string pattern: exact, `prefix*`, `*suffix`, or `*` (any value that is present).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Present,
}

impl StrMatch {
    /// Istio's reading of a value: `*` alone is presence, a leading or trailing `*` a
    /// suffix or prefix match, anything else exact.
    pub fn parse(v: &str) -> StrMatch {
        if v == "*" {
            StrMatch::Present
        } else if let Some(rest) = v.strip_suffix('*').filter(|r| !r.starts_with('*')) {
            StrMatch::Prefix(rest.to_string())
        } else if let Some(rest) = v.strip_prefix('*') {
            StrMatch::Suffix(rest.to_string())
        } else {
            StrMatch::Exact(v.to_string())
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(s) => value == s,
            StrMatch::Prefix(s) => value.starts_with(s.as_str()),
            StrMatch::Suffix(s) => value.ends_with(s.as_str()),
            StrMatch::Present => !value.is_empty(),
        }
    }

    fn matches_ignoring_case(&self, value: &str) -> bool {
        let lower = |s: &str| s.to_ascii_lowercase();
        match self {
            StrMatch::Exact(s) => value.eq_ignore_ascii_case(s),
            StrMatch::Prefix(s) => lower(value).starts_with(&lower(s)),
            StrMatch::Suffix(s) => lower(value).ends_with(&lower(s)),
            StrMatch::Present => !value.is_empty(),
        }
    }
}

/// An address block: an IP and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (_, ip) => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<Cidr>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<StrMatch>,
}

/// The attribute a condition reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Attribute {
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    ConnectionSni,
    /// A request header (lower case).
    RequestHeader(String),
    /// A JWT's attributes (RequestAuthentication): no request here has them.
    RequestAuth(String),
}

impl Attribute {
    fn is_http_only(&self) -> bool {
        matches!(
            self,
            Attribute::RequestHeader(_) | Attribute::RequestAuth(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionMatch {
    pub key: Attribute,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ConditionValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<ConditionValue>,
}

/// A condition's value, read once by the compiler as its attribute takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConditionValue {
    Str(StrMatch),
    Ip(Cidr),
    Port(u16),
}

/// A request's header values, by lower-case name.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Headers for hyper::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        hyper::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

/// What an HTTP request adds to a connection's attributes.
#[derive(Clone, Copy)]
pub struct HttpAttributes<'a> {
    pub method: &'a str,
    /// Without the query.
    pub path: &'a str,
    /// The Host (`:authority`).
    pub host: &'a str,
    pub headers: &'a dyn Headers,
}

/// What a decision reads: the connection, and the request when it is HTTP.
#[derive(Clone, Copy)]
pub struct Attributes<'a> {
    pub source_ip: IpAddr,
    /// The original client's address (the source, unless a gateway trusts X-Forwarded-For).
    pub remote_ip: IpAddr,
    /// The verified peer identity without `spiffe://` (`cluster.local/ns/a/sa/b`).
    pub principal: Option<&'a str>,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub sni: Option<&'a str>,
    pub http: Option<HttpAttributes<'a>>,
}

impl Attributes<'_> {
    /// The namespace of the peer's identity.
    fn namespace(&self) -> Option<&str> {
        let mut parts = self.principal?.split('/');
        parts.next()?;
        (parts.next()? == "ns").then(|| parts.next()).flatten()
    }
}

/// A match that may need what only HTTP has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    /// An HTTP-only field on a connection without HTTP.
    NeedsHttp,
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b {
            Tri::Yes
        } else {
            Tri::No
        }
    }

    /// Every one must match.
    fn all(items: impl IntoIterator<Item = Tri>) -> Tri {
        let mut out = Tri::Yes;
        for t in items {
            match t {
                Tri::No => return Tri::No,
                Tri::NeedsHttp => out = Tri::NeedsHttp,
                Tri::Yes => {}
            }
        }
        out
    }

    /// Any one must match.
    fn any(items: impl IntoIterator<Item = Tri>) -> Tri {
        let mut out = Tri::No;
        for t in items {
            match t {
                Tri::Yes => return Tri::Yes,
                Tri::NeedsHttp => out = Tri::NeedsHttp,
                Tri::No => {}
            }
        }
        out
    }
}

/// Every one must match, evaluated in order and no further than the first that fails
/// (the data path runs this on every request).
macro_rules! all {
    ($($e:expr),* $(,)?) => {{
        let mut out = Tri::Yes;
        $(
            match $e {
                Tri::No => return Tri::No,
                Tri::NeedsHttp => out = Tri::NeedsHttp,
                Tri::Yes => {}
            }
        )*
        out
    }};
}

/// A field of string patterns against the value `value` reads, only when the field has
/// patterns (absent value: matches only `not` fields).
fn field<'a>(yes: &[StrMatch], not: &[StrMatch], value: impl FnOnce() -> Option<&'a str>) -> Tri {
    if yes.is_empty() && not.is_empty() {
        return Tri::Yes;
    }
    let value = value();
    let m = |p: &StrMatch| value.is_some_and(|v| p.matches(v));
    Tri::of((yes.is_empty() || yes.iter().any(m)) && !not.iter().any(m))
}

/// A field only an HTTP request has.
fn http_field<'a>(
    yes: &[StrMatch],
    not: &[StrMatch],
    req: &Attributes<'a>,
    pick: impl Fn(&HttpAttributes<'a>) -> Option<&'a str>,
) -> Tri {
    if yes.is_empty() && not.is_empty() {
        return Tri::Yes;
    }
    let Some(http) = &req.http else {
        return Tri::NeedsHttp;
    };
    field(yes, not, || pick(http))
}

fn blocks(yes: &[Cidr], not: &[Cidr], ip: IpAddr) -> Tri {
    if yes.is_empty() && not.is_empty() {
        return Tri::Yes;
    }
    Tri::of(
        (yes.is_empty() || yes.iter().any(|c| c.contains(ip)))
            && !not.iter().any(|c| c.contains(ip)),
    )
}

fn source(s: &SourceMatch, req: &Attributes) -> Tri {
    all!(
        field(&s.principals, &s.not_principals, || req.principal),
        // JWT principals: no request here has one.
        http_field(
            &s.request_principals,
            &s.not_request_principals,
            req,
            |_| None,
        ),
        field(&s.namespaces, &s.not_namespaces, || req.namespace()),
        blocks(&s.ip_blocks, &s.not_ip_blocks, req.source_ip),
        blocks(&s.remote_ip_blocks, &s.not_remote_ip_blocks, req.remote_ip),
    )
}

/// The Host without its port (`example.com:8000`, `[::1]:8000`).
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn hosts(o: &OperationMatch, req: &Attributes) -> Tri {
    if o.hosts.is_empty() && o.not_hosts.is_empty() {
        Tri::Yes
    } else {
        match &req.http {
            None => Tri::NeedsHttp,
            Some(http) => {
                let m = |p: &StrMatch| {
                    p.matches_ignoring_case(http.host)
                        || p.matches_ignoring_case(host_name(http.host))
                };
                Tri::of((o.hosts.is_empty() || o.hosts.iter().any(m)) && !o.not_hosts.iter().any(m))
            }
        }
    }
}

fn operation(o: &OperationMatch, req: &Attributes) -> Tri {
    let port = req.destination_port;
    all!(
        Tri::of((o.ports.is_empty() || o.ports.contains(&port)) && !o.not_ports.contains(&port)),
        http_field(&o.methods, &o.not_methods, req, |h| Some(h.method)),
        http_field(&o.paths, &o.not_paths, req, |h| Some(h.path)),
        hosts(o, req),
    )
}

fn condition(c: &ConditionMatch, req: &Attributes) -> Tri {
    if c.key.is_http_only() && req.http.is_none() {
        return Tri::NeedsHttp;
    }
    let str_value = |v: &ConditionValue, value: Option<&str>| match v {
        ConditionValue::Str(m) => value.is_some_and(|s| m.matches(s)),
        _ => false,
    };
    let value_matches = |v: &ConditionValue| -> bool {
        match (&c.key, v) {
            (Attribute::SourceIp, ConditionValue::Ip(cidr)) => cidr.contains(req.source_ip),
            (Attribute::RemoteIp, ConditionValue::Ip(cidr)) => cidr.contains(req.remote_ip),
            (Attribute::DestinationIp, ConditionValue::Ip(cidr)) => {
                cidr.contains(req.destination_ip)
            }
            (Attribute::DestinationPort, ConditionValue::Port(p)) => *p == req.destination_port,
            (Attribute::SourceNamespace, v) => str_value(v, req.namespace()),
            (Attribute::SourcePrincipal, v) => str_value(v, req.principal),
            (Attribute::ConnectionSni, v) => str_value(v, req.sni),
            (Attribute::RequestHeader(name), v) => {
                str_value(v, req.http.and_then(|h| h.headers.get(name)))
            }
            _ => false,
        }
    };
    Tri::of(
        (c.values.is_empty() || c.values.iter().any(value_matches))
            && !c.not_values.iter().any(value_matches),
    )
}

fn rule(r: &AuthzRule, req: &Attributes) -> Tri {
    all!(
        match &r.from {
            None => Tri::Yes,
            Some(list) => Tri::any(list.iter().map(|s| source(s, req))),
        },
        match &r.to {
            None => Tri::Yes,
            Some(list) => Tri::any(list.iter().map(|o| operation(o, req))),
        },
        Tri::all(r.when.iter().map(|c| condition(c, req))),
    )
}

/// The first rule of `policy` that matches, if any.
pub fn matching_rule(policy: &AuthzPolicy, req: &Attributes) -> Option<usize> {
    policy.rules.iter().position(|r| match rule(r, req) {
        Tri::Yes => true,
        Tri::No => false,
        // What TCP cannot show: an ALLOW rule does not match, a DENY (or AUDIT) rule
        // ignores it.
        Tri::NeedsHttp => policy.action != AuthzAction::Allow,
    })
}

/// Which policy and rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched<'a> {
    pub policy: &'a str,
    pub action: AuthzAction,
    pub rule: usize,
}

/// A decision and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'a> {
    pub allowed: bool,
    /// The DENY rule that denied, or the ALLOW rule that allowed; `None` when no policy
    /// applies (allowed) or no ALLOW rule matched (denied).
    pub by: Option<Matched<'a>>,
    /// The first AUDIT rule that matched.
    pub audit: Option<Matched<'a>>,
    /// The ALLOW policies that apply: the first one's name and how many there are.
    pub allow_policies: (Option<&'a str>, usize),
}

impl Verdict<'_> {
    /// Why, in a few words: `denied by AuthorizationPolicy ns/name (rule 0)`.
    pub fn reason(&self) -> String {
        match (self.allowed, self.by) {
            (true, None) => "no authorization policy applies".into(),
            (true, Some(m)) => format!(
                "allowed by AuthorizationPolicy {} (rule {})",
                m.policy, m.rule
            ),
            (false, Some(m)) => format!(
                "denied by AuthorizationPolicy {} (rule {})",
                m.policy, m.rule
            ),
            (false, None) => match self.allow_policies {
                (Some(first), 1) => {
                    format!("denied by AuthorizationPolicy {first}: none of its ALLOW rules matched")
                }
                (Some(first), n) => format!(
                    "denied by AuthorizationPolicy {first} and {} other ALLOW policies: none of their rules matched",
                    n - 1
                ),
                (None, _) => "denied: no ALLOW AuthorizationPolicy matched".into(),
            },
        }
    }
}

/// Istio's evaluation: DENY, then ALLOW (AUDIT only marks).
pub fn evaluate<'a>(authz: &'a Authorization, req: &Attributes) -> Verdict<'a> {
    let first = |action: AuthzAction| {
        authz
            .policies
            .iter()
            .filter(|p| p.action == action)
            .find_map(|p| {
                matching_rule(p, req).map(|rule| Matched {
                    policy: p.name.as_str(),
                    action,
                    rule,
                })
            })
    };
    let audit = first(AuthzAction::Audit);
    let mut allows = authz
        .policies
        .iter()
        .filter(|p| p.action == AuthzAction::Allow);
    let allow_policies = match allows.next() {
        Some(p) => (Some(p.name.as_str()), 1 + allows.count()),
        None => (None, 0),
    };
    let verdict = |allowed, by| Verdict {
        allowed,
        by,
        audit,
        allow_policies,
    };
    if let Some(deny) = first(AuthzAction::Deny) {
        return verdict(false, Some(deny));
    }
    if allow_policies.0.is_none() {
        return verdict(true, None);
    }
    let allow = first(AuthzAction::Allow);
    verdict(allow.is_some(), allow)
}

#[cfg(test)]
mod tests;
