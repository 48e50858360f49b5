//! The semantics, row by row, with cases from Istio's documentation of each field.

use super::*;

fn s(v: &str) -> StrMatch {
    StrMatch::parse(v)
}

fn cidr(v: &str) -> Cidr {
    let (addr, len) = v.split_once('/').unwrap_or((v, ""));
    let addr: std::net::IpAddr = addr.parse().unwrap();
    let len = len.parse().unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
    Cidr { addr, len }
}

/// A condition value as the compiler reads it for `key`.
fn value(key: &Attribute, v: &str) -> ConditionValue {
    match key {
        Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
            ConditionValue::Ip(cidr(v))
        }
        Attribute::DestinationPort => ConditionValue::Port(v.parse().unwrap()),
        _ => ConditionValue::Str(s(v)),
    }
}

fn policy(name: &str, action: AuthzAction, rules: Vec<AuthzRule>) -> AuthzPolicy {
    AuthzPolicy {
        name: name.into(),
        action,
        rules,
    }
}

fn from(src: SourceMatch) -> AuthzRule {
    AuthzRule {
        from: Some(vec![src]),
        ..Default::default()
    }
}

fn to(op: OperationMatch) -> AuthzRule {
    AuthzRule {
        to: Some(vec![op]),
        ..Default::default()
    }
}

const SLEEP: &str = "cluster.local/ns/foo/sa/sleep";

/// A request from `principal` (None: plaintext) at 10.0.0.5 to port 8000, GET `path`.
fn http<'a>(
    principal: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    headers: &'a dyn Headers,
) -> Attributes<'a> {
    Attributes {
        source_ip: "10.0.0.5".parse().unwrap(),
        remote_ip: "10.0.0.5".parse().unwrap(),
        principal,
        destination_ip: "10.0.0.9".parse().unwrap(),
        destination_port: 8000,
        sni: None,
        http: Some(HttpAttributes {
            method,
            path,
            host: "httpbin.foo:8000",
            headers,
        }),
    }
}

fn tcp(principal: Option<&str>, port: u16) -> Attributes<'_> {
    Attributes {
        source_ip: "10.0.0.5".parse().unwrap(),
        remote_ip: "10.0.0.5".parse().unwrap(),
        principal,
        destination_ip: "10.0.0.9".parse().unwrap(),
        destination_port: port,
        sni: None,
        http: None,
    }
}

fn decide(policies: Vec<AuthzPolicy>, req: &Attributes) -> (bool, Option<String>) {
    let authz = Authorization { policies };
    let v = evaluate(&authz, req);
    (v.allowed, v.by.map(|m| format!("{} {}", m.policy, m.rule)))
}

#[test]
fn patterns() {
    let rows = [
        ("*", "anything", true),
        ("*", "", false),
        ("/info*", "/info/x", true),
        ("/info*", "/inf", false),
        ("*.example.com", "a.example.com", true),
        ("*.example.com", "example.com", false),
        ("GET", "GET", true),
        ("GET", "get", false),
        ("cluster.local/ns/foo/sa/*", SLEEP, true),
    ];
    for (pattern, value, want) in rows {
        assert_eq!(s(pattern).matches(value), want, "{pattern} ~ {value}");
    }
    assert!(cidr("10.0.0.0/8").contains("10.1.2.3".parse().unwrap()));
    assert!(!cidr("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
    assert!(cidr("10.0.0.5").contains("10.0.0.5".parse().unwrap()));
    assert!(cidr("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
    assert!(cidr("10.0.0.0/8").contains("::ffff:10.0.0.1".parse().unwrap()));
    assert!(cidr("fd00::/8").contains("fd12::1".parse().unwrap()));
}

#[test]
fn evaluation_order_and_defaults() {
    let none: &Vec<(String, String)> = &Vec::new();
    let get = http(Some(SLEEP), "GET", "/headers", none);
    let allow_all = || {
        policy(
            "foo/allow-all",
            AuthzAction::Allow,
            vec![AuthzRule::default()],
        )
    };
    let allow_nothing = || policy("foo/allow-nothing", AuthzAction::Allow, vec![]);
    let deny_get = || {
        policy(
            "foo/deny-get",
            AuthzAction::Deny,
            vec![to(OperationMatch {
                methods: vec![s("GET")],
                ..Default::default()
            })],
        )
    };
    let rows: Vec<(&str, Vec<AuthzPolicy>, bool, Option<&str>)> = vec![
        ("no policy: allowed", vec![], true, None),
        (
            "rules: [{}] allows everything",
            vec![allow_all()],
            true,
            Some("foo/allow-all 0"),
        ),
        (
            "spec: {} allows nothing",
            vec![allow_nothing()],
            false,
            None,
        ),
        (
            "DENY wins over ALLOW",
            vec![allow_all(), deny_get()],
            false,
            Some("foo/deny-get 0"),
        ),
        (
            "a DENY alone leaves the rest allowed",
            vec![deny_get()],
            false,
            Some("foo/deny-get 0"),
        ),
        (
            "AUDIT changes nothing",
            vec![policy(
                "foo/audit",
                AuthzAction::Audit,
                vec![AuthzRule::default()],
            )],
            true,
            None,
        ),
    ];
    for (case, policies, allowed, by) in rows {
        assert_eq!(
            decide(policies, &get),
            (allowed, by.map(str::to_string)),
            "{case}"
        );
    }
    let post = http(Some(SLEEP), "POST", "/post", none);
    assert_eq!(
        decide(vec![deny_get()], &post),
        (true, None),
        "DENY not matching"
    );
    let audit = Authorization {
        policies: vec![policy(
            "foo/audit",
            AuthzAction::Audit,
            vec![AuthzRule::default()],
        )],
    };
    let audited = evaluate(&audit, &get);
    assert_eq!(audited.audit.map(|m| m.policy), Some("foo/audit"));
}

#[test]
fn sources() {
    let none: &Vec<(String, String)> = &Vec::new();
    let allow = |src: SourceMatch| vec![policy("foo/p", AuthzAction::Allow, vec![from(src)])];
    let rows: Vec<(&str, SourceMatch, Option<&str>, bool)> = vec![
        (
            "principal matches",
            SourceMatch {
                principals: vec![s(SLEEP)],
                ..Default::default()
            },
            Some(SLEEP),
            true,
        ),
        (
            "plaintext has no principal",
            SourceMatch {
                principals: vec![s("*")],
                ..Default::default()
            },
            None,
            false,
        ),
        (
            "notPrincipals * admits plaintext only",
            SourceMatch {
                not_principals: vec![s("*")],
                ..Default::default()
            },
            None,
            true,
        ),
        (
            "notPrincipals * refuses mTLS",
            SourceMatch {
                not_principals: vec![s("*")],
                ..Default::default()
            },
            Some(SLEEP),
            false,
        ),
        (
            "namespace from the principal",
            SourceMatch {
                namespaces: vec![s("foo")],
                ..Default::default()
            },
            Some(SLEEP),
            true,
        ),
        (
            "another namespace",
            SourceMatch {
                namespaces: vec![s("bar")],
                ..Default::default()
            },
            Some(SLEEP),
            false,
        ),
        (
            "notNamespaces",
            SourceMatch {
                not_namespaces: vec![s("foo")],
                ..Default::default()
            },
            Some(SLEEP),
            false,
        ),
        (
            "plaintext has no namespace",
            SourceMatch {
                namespaces: vec![s("foo")],
                ..Default::default()
            },
            None,
            false,
        ),
        (
            "ipBlocks",
            SourceMatch {
                ip_blocks: vec![cidr("10.0.0.0/24")],
                ..Default::default()
            },
            None,
            true,
        ),
        (
            "notIpBlocks",
            SourceMatch {
                not_ip_blocks: vec![cidr("10.0.0.5")],
                ..Default::default()
            },
            None,
            false,
        ),
        (
            "remoteIpBlocks",
            SourceMatch {
                remote_ip_blocks: vec![cidr("192.168.0.0/16")],
                ..Default::default()
            },
            None,
            false,
        ),
    ];
    for (case, src, principal, want) in rows {
        let req = http(principal, "GET", "/", none);
        assert_eq!(decide(allow(src), &req).0, want, "{case}");
    }
}

#[test]
fn sources_combined() {
    let none: &Vec<(String, String)> = &Vec::new();
    let allow = |src: SourceMatch| vec![policy("foo/p", AuthzAction::Allow, vec![from(src)])];
    let rows: Vec<(&str, SourceMatch, Option<&str>, bool)> = vec![
        (
            "fields AND",
            SourceMatch {
                principals: vec![s(SLEEP)],
                namespaces: vec![s("bar")],
                ..Default::default()
            },
            Some(SLEEP),
            false,
        ),
        (
            "values OR",
            SourceMatch {
                principals: vec![s("cluster.local/ns/x/sa/y"), s(SLEEP)],
                ..Default::default()
            },
            Some(SLEEP),
            true,
        ),
        (
            "request principals: no JWT here",
            SourceMatch {
                request_principals: vec![s("*")],
                ..Default::default()
            },
            Some(SLEEP),
            false,
        ),
        (
            "notRequestPrincipals * admits requests without JWT",
            SourceMatch {
                not_request_principals: vec![s("*")],
                ..Default::default()
            },
            Some(SLEEP),
            true,
        ),
    ];
    for (case, src, principal, want) in rows {
        let req = http(principal, "GET", "/", none);
        assert_eq!(decide(allow(src), &req).0, want, "{case}");
    }
}

#[test]
fn operations_and_conditions() {
    let headers = vec![("x-token".to_string(), "admin".to_string())];
    let allow_op = |op: OperationMatch| vec![policy("foo/p", AuthzAction::Allow, vec![to(op)])];
    let rows: Vec<(&str, OperationMatch, &str, &str, bool)> = vec![
        (
            "method",
            OperationMatch {
                methods: vec![s("GET")],
                ..Default::default()
            },
            "GET",
            "/",
            true,
        ),
        (
            "other method",
            OperationMatch {
                methods: vec![s("GET")],
                ..Default::default()
            },
            "POST",
            "/",
            false,
        ),
        (
            "notMethods",
            OperationMatch {
                not_methods: vec![s("POST")],
                ..Default::default()
            },
            "GET",
            "/",
            true,
        ),
        (
            "exact path",
            OperationMatch {
                paths: vec![s("/headers")],
                ..Default::default()
            },
            "GET",
            "/headers",
            true,
        ),
        (
            "prefix path",
            OperationMatch {
                paths: vec![s("/info*")],
                ..Default::default()
            },
            "GET",
            "/info/a",
            true,
        ),
        (
            "suffix path",
            OperationMatch {
                paths: vec![s("*/healthz")],
                ..Default::default()
            },
            "GET",
            "/a/healthz",
            true,
        ),
        (
            "notPaths",
            OperationMatch {
                not_paths: vec![s("/admin*")],
                ..Default::default()
            },
            "GET",
            "/admin/x",
            false,
        ),
        (
            "host without port",
            OperationMatch {
                hosts: vec![s("HTTPBIN.foo")],
                ..Default::default()
            },
            "GET",
            "/",
            true,
        ),
        (
            "host suffix",
            OperationMatch {
                hosts: vec![s("*.foo")],
                ..Default::default()
            },
            "GET",
            "/",
            true,
        ),
        (
            "port",
            OperationMatch {
                ports: vec![8000],
                ..Default::default()
            },
            "GET",
            "/",
            true,
        ),
        (
            "notPorts",
            OperationMatch {
                not_ports: vec![8000],
                ..Default::default()
            },
            "GET",
            "/",
            false,
        ),
    ];
    for (case, op, method, path, want) in rows {
        let req = http(Some(SLEEP), method, path, &headers);
        assert_eq!(decide(allow_op(op), &req).0, want, "{case}");
    }
}

#[test]
fn conditions() {
    let headers = vec![("x-token".to_string(), "admin".to_string())];
    let when = |key: Attribute, values: &[&str], not: &[&str]| {
        vec![policy(
            "foo/p",
            AuthzAction::Allow,
            vec![AuthzRule {
                when: vec![ConditionMatch {
                    values: values.iter().map(|v| value(&key, v)).collect(),
                    not_values: not.iter().map(|v| value(&key, v)).collect(),
                    key,
                }],
                ..Default::default()
            }],
        )]
    };
    let req = http(Some(SLEEP), "GET", "/", &headers);
    let crows: Vec<(&str, Vec<AuthzPolicy>, bool)> = vec![
        (
            "header",
            when(Attribute::RequestHeader("x-token".into()), &["admin"], &[]),
            true,
        ),
        (
            "header prefix",
            when(Attribute::RequestHeader("x-token".into()), &["adm*"], &[]),
            true,
        ),
        (
            "missing header",
            when(Attribute::RequestHeader("x-other".into()), &["*"], &[]),
            false,
        ),
        (
            "source.ip CIDR",
            when(Attribute::SourceIp, &["10.0.0.0/8"], &[]),
            true,
        ),
        (
            "source.ip notValues",
            when(Attribute::SourceIp, &[], &["10.0.0.5"]),
            false,
        ),
        (
            "destination.port",
            when(Attribute::DestinationPort, &["8000"], &[]),
            true,
        ),
        (
            "source.namespace",
            when(Attribute::SourceNamespace, &["foo"], &[]),
            true,
        ),
        (
            "source.principal",
            when(Attribute::SourcePrincipal, &["*/sa/sleep"], &[]),
            true,
        ),
        (
            "request.auth: no JWT",
            when(Attribute::RequestAuth("principal".into()), &["*"], &[]),
            false,
        ),
    ];
    for (case, policies, want) in crows {
        assert_eq!(decide(policies, &req).0, want, "{case}");
    }
}

#[test]
fn http_only_fields_on_tcp() {
    // Istio's TCP task: methods on a TCP port. An ALLOW rule with it matches no TCP
    // connection (fail closed); a DENY rule ignores it and so denies the port.
    let op = OperationMatch {
        ports: vec![9000],
        methods: vec![s("GET")],
        ..Default::default()
    };
    let allow = vec![policy(
        "foo/allow-get",
        AuthzAction::Allow,
        vec![to(op.clone())],
    )];
    let deny = vec![policy("foo/deny-get", AuthzAction::Deny, vec![to(op)])];
    assert_eq!(
        decide(allow.clone(), &tcp(Some(SLEEP), 9000)),
        (false, None)
    );
    assert_eq!(
        decide(deny.clone(), &tcp(Some(SLEEP), 9000)),
        (false, Some("foo/deny-get 0".into()))
    );
    // The port still has to match.
    assert_eq!(decide(deny, &tcp(Some(SLEEP), 9001)), (true, None));
    // Without HTTP fields, a TCP rule is as for HTTP.
    let ports = vec![policy(
        "foo/tcp",
        AuthzAction::Allow,
        vec![AuthzRule {
            from: Some(vec![SourceMatch {
                principals: vec![s(SLEEP)],
                ..Default::default()
            }]),
            to: Some(vec![OperationMatch {
                ports: vec![9000],
                ..Default::default()
            }]),
            when: vec![],
        }],
    )];
    assert!(decide(ports.clone(), &tcp(Some(SLEEP), 9000)).0);
    assert!(!decide(ports.clone(), &tcp(None, 9000)).0);
    assert!(!decide(ports, &tcp(Some(SLEEP), 9001)).0);
    // A header condition on TCP: ALLOW fails closed, DENY ignores it.
    let cond = AuthzRule {
        when: vec![ConditionMatch {
            key: Attribute::RequestHeader("x".into()),
            values: vec![ConditionValue::Str(s("y"))],
            not_values: vec![],
        }],
        ..Default::default()
    };
    assert!(
        !decide(
            vec![policy("foo/a", AuthzAction::Allow, vec![cond.clone()])],
            &tcp(None, 1)
        )
        .0
    );
    assert!(
        !decide(
            vec![policy("foo/d", AuthzAction::Deny, vec![cond])],
            &tcp(None, 1)
        )
        .0
    );
}

#[test]
fn verdicts_say_why() {
    let deny = Matched {
        policy: "foo/deny",
        action: AuthzAction::Deny,
        rule: 1,
    };
    let v = |by, allow_policies| Verdict {
        allowed: false,
        by,
        audit: None,
        allow_policies,
    };
    let rows = [
        (v(Some(deny), (None, 0)), "denied by AuthorizationPolicy foo/deny (rule 1)"),
        (
            v(None, (Some("foo/viewer"), 1)),
            "denied by AuthorizationPolicy foo/viewer: none of its ALLOW rules matched",
        ),
        (
            v(None, (Some("foo/a"), 3)),
            "denied by AuthorizationPolicy foo/a and 2 other ALLOW policies: none of their rules matched",
        ),
    ];
    for (verdict, want) in rows {
        assert_eq!(verdict.reason(), want);
    }
}
