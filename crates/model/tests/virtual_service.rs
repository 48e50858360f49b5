//! VirtualService rules: delegation, weights, fault injection, mirroring, CORS and header
//! changes, each accepted and refused, with Istio's wording and the field path.

mod support;

use support::{run, Case};

fn vs(cases: &[Case]) {
    run("networking.istio.io/v1", "VirtualService", cases);
}

/// `hosts: [a]` and one route, with `extra` added to the route.
const ROUTE: &str = "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n";

fn route(extra: &str) -> String {
    let extra: String = extra.lines().map(|l| format!("  {l}\n")).collect();
    format!("{ROUTE}{extra}")
}

#[test]
fn delegation() {
    vs(&[
        (
            "a delegate has no hosts",
            "http:\n- match: [{uri: {prefix: /reviews}}]\n  route: [{destination: {host: reviews}}]",
            &[],
        ),
        (
            "a root route names the delegate",
            "hosts: [bookinfo.example.com]\ngateways: [bookinfo]\nhttp:\n- match: [{uri: {prefix: /reviews}}]\n  delegate: {name: reviews, namespace: default}",
            &[],
        ),
        (
            "a delegate binds to no gateway and has HTTP routes only",
            "gateways: [bookinfo]\nhttp:\n- route: [{destination: {host: reviews}}]\ntcp:\n- route: [{destination: {host: reviews}}]",
            &[
                "error: spec.gateways: delegate virtual service must have no gateways specified",
                "error: spec.tcp: delegate virtual service must have no tcp route specified",
            ],
        ),
        (
            "a delegate's route cannot delegate again",
            "http:\n- delegate: {name: other}",
            &[
                "error: spec.http[0].delegate: delegate HTTP route cannot contain delegate",
                "error: spec.http[0].route: HTTP route, redirect or direct_response is required",
            ],
        ),
        (
            "a root route forwards nowhere itself",
            "hosts: [a]\nhttp:\n- name: reviews\n  delegate: {name: reviews}\n  route: [{destination: {host: reviews}}]\n  redirect: {uri: /x}",
            &[
                "error: spec.http[0].route: root HTTP route reviews must not specify route",
                "error: spec.http[0].redirect: root HTTP route reviews must not specify redirect",
            ],
        ),
        (
            "no regular expressions when delegating",
            "hosts: [a]\nhttp:\n- match: [{uri: {regex: /r.*}, headers: {x-user: {regex: a.*}}}]\n  delegate: {name: reviews}",
            &[
                "error: spec.http[0].match[0].uri.regex: url match does not support regex match for delegating",
                "error: spec.http[0].match[0].headers[x-user].regex: header match x-user does not support regex match for delegating",
            ],
        ),
        (
            "every VirtualService has routes",
            "hosts: [a]",
            &["error: spec: http, tcp or tls must be provided in virtual service"],
        ),
        (
            "delegate is typed",
            "hosts: [a]\nhttp:\n- delegate: {name: reviews, nmespace: default}",
            &["error: spec.http[0].delegate.nmespace: unknown field \"nmespace\" (allowed here: name, namespace)"],
        ),
    ]);
}

#[test]
fn route_conflicts() {
    vs(&[
        (
            "direct response",
            "hosts: [a]\nhttp:\n- directResponse: {status: 503}",
            &[],
        ),
        (
            "route and redirect",
            &route("redirect: {uri: /x}"),
            &["error: spec.http[0].redirect: HTTP route cannot contain both route and redirect"],
        ),
        (
            "fault and redirect",
            "hosts: [a]\nhttp:\n- redirect: {uri: /x}\n  fault: {abort: {httpStatus: 500}}\n  rewrite: {uri: /y}",
            &[
                "error: spec.http[0].fault: HTTP route cannot contain both fault and redirect",
                "error: spec.http[0].rewrite: HTTP route rule cannot contain both rewrite and redirect",
            ],
        ),
        (
            "fault and direct response",
            "hosts: [a]\nhttp:\n- directResponse: {status: 503}\n  fault: {abort: {httpStatus: 500}}",
            &["error: spec.http[0].fault: HTTP route cannot contain both fault and direct_response"],
        ),
        (
            "nothing to do",
            "hosts: [a]\nhttp:\n- match: [{uri: {exact: /}}]",
            &["error: spec.http[0].route: HTTP route, redirect or direct_response is required"],
        ),
    ]);
}

#[test]
fn weights() {
    vs(&[
        (
            "weights not adding up to 100 are shares",
            "hosts: [a]\nhttp:\n- route:\n  - {destination: {host: a, subset: v1}, weight: 60}\n  - {destination: {host: a, subset: v2}, weight: 30}",
            &[],
        ),
        (
            "a single destination with weight 0",
            "hosts: [a]\nhttp:\n- route: [{destination: {host: a}, weight: 0}]",
            &[],
        ),
        (
            "a negative weight",
            "hosts: [a]\nhttp:\n- route:\n  - {destination: {host: a, subset: v1}, weight: -10}\n  - {destination: {host: a, subset: v2}, weight: 50}",
            &["error: spec.http[0].route[0].weight: weight -10 < 0"],
        ),
        (
            "several destinations without weight",
            "hosts: [a]\ntcp:\n- route:\n  - {destination: {host: a, subset: v1}}\n  - {destination: {host: a, subset: v2}}",
            &["error: spec.tcp[0].route: total destination weight = 0"],
        ),
    ]);
}

#[test]
fn fault_injection() {
    vs(&[
        (
            "delay and abort",
            &route("fault:\n  delay: {fixedDelay: 5s, percentage: {value: 0.1}}\n  abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}"),
            &[],
        ),
        (
            "neither",
            &route("fault: {}"),
            &["error: spec.http[0].fault: HTTP fault injection must have an abort and/or a delay"],
        ),
        (
            "percentages",
            &route("fault:\n  delay: {fixedDelay: 5s, percentage: {value: 101}}\n  abort: {httpStatus: 503, percentage: {value: 0.00001}}"),
            &[
                "error: spec.http[0].fault.delay.percentage.value: percentage 101 is neither 0.0, nor in range [0.0001, 100.0]",
                "error: spec.http[0].fault.abort.percentage.value: percentage 0.00001 is neither 0.0, nor in range [0.0001, 100.0]",
            ],
        ),
        (
            "delay durations",
            &route("fault: {delay: {fixedDelay: 0.5ms}}"),
            &["error: spec.http[0].fault.delay.fixedDelay: duration must be greater than 1ms"],
        ),
        (
            "exponential delay",
            &route("fault: {delay: {exponentialDelay: 1s}}"),
            &["error: spec.http[0].fault.delay.exponentialDelay: exponentialDelay not supported yet"],
        ),
        (
            "two delay kinds",
            &route("fault: {delay: {fixedDelay: 1s, exponentialDelay: 1s}}"),
            &[
                "error: spec.http[0].fault.delay.exponentialDelay: only one of fixedDelay or exponentialDelay can be set (found fixedDelay and exponentialDelay)",
                "error: spec.http[0].fault.delay.exponentialDelay: exponentialDelay not supported yet",
            ],
        ),
        (
            "abort status out of range",
            &route("fault: {abort: {httpStatus: 700}}"),
            &["error: spec.http[0].fault.abort.httpStatus: HTTP status 700 is not in range 200-599"],
        ),
        (
            "gRPC status by number",
            &route("fault: {abort: {grpcStatus: \"14\"}}"),
            &["error: spec.http[0].fault.abort.grpcStatus: gRPC status \"14\" is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"],
        ),
        (
            "HTTP/2 error",
            &route("fault: {abort: {http2Error: REFUSED_STREAM}}"),
            &["error: spec.http[0].fault.abort.http2Error: HTTP/2 abort fault injection not supported yet"],
        ),
        (
            "abort without an error type",
            &route("fault: {abort: {percentage: {value: 10}}}"),
            &["warning: spec.http[0].fault.abort: abort configured, but error type not set"],
        ),
        (
            "the old integer percent is gone from abort",
            &route("fault: {abort: {httpStatus: 503, percent: 10}}"),
            &["error: spec.http[0].fault.abort.percent: unknown field \"percent\" (allowed here: grpcStatus, http2Error, httpStatus, percentage)"],
        ),
    ]);
}

#[test]
fn mirroring() {
    vs(&[
        (
            "mirror with a percentage",
            &route("mirror: {host: b, subset: v1, port: {number: 80}}\nmirrorPercentage: {value: 50.5}"),
            &[],
        ),
        (
            "mirrors",
            &route("mirrors:\n- destination: {host: b}\n  percentage: {value: 10}\n- destination: {host: c}"),
            &[],
        ),
        (
            "mirror destination",
            &route("mirror: {host: \"*\", subset: V_1, port: {number: 0}}"),
            &[
                "error: spec.http[0].mirror.host: invalid destination host *",
                "error: spec.http[0].mirror.subset: subset name is invalid: V_1",
                "error: spec.http[0].mirror.port.number: port number 0 must be in the range 1..65535",
            ],
        ),
        (
            "mirror and mirrors",
            &route("mirror: {host: b}\nmirrors: [{destination: {host: c}}]"),
            &["error: spec.http[0].mirrors: HTTP route cannot contain both mirror and mirrors"],
        ),
        (
            "mirrors need a destination and a percentage up to 100",
            &route("mirrors:\n- percentage: {value: 150}"),
            &[
                "error: spec.http[0].mirrors[0].destination: destination is required for mirrors",
                "error: spec.http[0].mirrors[0].percentage.value: mirror percentage must have a max value of 100 (it has 150.000000)",
            ],
        ),
        (
            "mirrorPercentage out of range",
            &route("mirror: {host: b}\nmirrorPercentage: {value: -1}"),
            &["error: spec.http[0].mirrorPercentage.value: mirror_percentage must have a min value of 0 (it has -1.000000)"],
        ),
        (
            "deprecated mirrorPercent",
            &route("mirror: {host: b}\nmirrorPercent: 200"),
            &[
                "error: spec.http[0].mirrorPercent: mirror_percent must have a max value of 100 (it has 200)",
                "warning: spec.http[0].mirrorPercent: using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
            ],
        ),
        (
            "mirror host",
            &route("mirror: {host: \"b..c\"}"),
            &["error: spec.http[0].mirror.host: domain name \".c\" invalid (label \"\" invalid)"],
        ),
    ]);
}

#[test]
fn cors() {
    vs(&[
        (
            "a full policy",
            &route("corsPolicy:\n  allowOrigins: [{exact: https://example.com}, {regex: \"https://.*\\\\.example\\\\.com\"}]\n  allowMethods: [GET, POST]\n  allowHeaders: [\"*\", x-user]\n  exposeHeaders: [x-request-id]\n  maxAge: 24h\n  allowCredentials: false\n  unmatchedPreflights: IGNORE"),
            &[],
        ),
        (
            "an origin without a match type",
            &route("corsPolicy: {allowOrigins: [{}]}"),
            &["error: spec.http[0].corsPolicy.allowOrigins[0]: '{}' is not a valid match type for CORS allow origins"],
        ),
        (
            "an origin regex that does not compile",
            &route("corsPolicy: {allowOrigins: [{regex: \"(\"}]}"),
            &["error: spec.http[0].corsPolicy.allowOrigins[0].regex: \"allowOrigins\": error: unclosed group; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"],
        ),
        (
            "methods are upper case",
            &route("corsPolicy: {allowMethods: [get]}"),
            &["error: spec.http[0].corsPolicy.allowMethods[0]: \"get\" is not a supported HTTP method"],
        ),
        (
            "header names",
            &route("corsPolicy: {allowHeaders: [\"\"], exposeHeaders: [\"x user\"]}"),
            &[
                "error: spec.http[0].corsPolicy.allowHeaders[0]: header name cannot be empty",
                "error: spec.http[0].corsPolicy.exposeHeaders[0]: header name x user is not a valid header name",
            ],
        ),
        (
            "max age in whole seconds",
            &route("corsPolicy: {maxAge: 1.5s}"),
            &["error: spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision"],
        ),
        (
            "unmatchedPreflights outside the enum",
            &route("corsPolicy: {unmatchedPreflights: DROP}"),
            &["error: spec.http[0].corsPolicy.unmatchedPreflights: \"DROP\" is not one of UNSPECIFIED, FORWARD, IGNORE"],
        ),
    ]);
}

#[test]
fn header_changes() {
    vs(&[
        (
            "request and response changes",
            &route("headers:\n  request: {set: {x-a: \"1\", host: b.example.com}, add: {x-b: \"2\"}, remove: [x-c]}\n  response: {set: {x-d: \"3\"}, remove: [x-e]}"),
            &[],
        ),
        (
            "pseudo-headers and host",
            &route("headers:\n  request: {set: {\":path\": /x}, remove: [host]}\n  response: {add: {\":status\": \"200\"}, set: {Host: b}}"),
            &[
                "error: spec.http[0].headers.request.set[:path]: invalid header \":path\": header cannot have \":\" prefix",
                "error: spec.http[0].headers.request.remove[0]: invalid header \"host\": cannot set Host header",
                "error: spec.http[0].headers.response.add[:status]: invalid header \":status\": header cannot have \":\" prefix",
                "error: spec.http[0].headers.response.set[Host]: invalid header \"Host\": cannot set Host header",
            ],
        ),
        (
            "a control character in a value",
            &route("headers: {request: {set: {x-a: \"a\\u0001b\"}}}"),
            &["error: spec.http[0].headers.request.set[x-a]: header value configuration a\u{1}b is invalid"],
        ),
        (
            "the authority set twice",
            &route("rewrite: {authority: b.example.com}\nheaders: {request: {set: {\":authority\": c.example.com}}}"),
            &["error: spec.http[0].headers.request.set[:authority]: authority header cannot be set multiple times: have \"b.example.com\", attempting to set \"c.example.com\""],
        ),
        (
            "destination headers",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a}\n    headers: {response: {remove: [\"\"]}}",
            &["error: spec.http[0].route[0].headers.response.remove[0]: header name cannot be empty"],
        ),
        (
            "unknown operation",
            &route("headers: {request: {append: {x-a: b}}}"),
            &["error: spec.http[0].headers.request.append: unknown field \"append\" (allowed here: add, remove, set)"],
        ),
    ]);
}

#[test]
fn matches() {
    vs(&[
        (
            "a header that only has to be present",
            "hosts: [a]\nhttp:\n- match: [{headers: {x-canary: {}}, queryParams: {debug: {}}, withoutHeaders: {x-test: {}}}]\n  route: [{destination: {host: a}}]",
            &[],
        ),
        (
            "a regex that does not compile",
            "hosts: [a]\nhttp:\n- match: [{uri: {regex: \"[a\"}}]\n  route: [{destination: {host: a}}]",
            &["error: spec.http[0].match[0].uri.regex: \"uri\": error: unclosed character class; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"],
        ),
        (
            "two match types",
            "hosts: [a]\nhttp:\n- match: [{queryParams: {v: {exact: \"1\", prefix: \"1\"}}}]\n  route: [{destination: {host: a}}]",
            &["error: spec.http[0].match[0].queryParams[v]: exactly one of exact, prefix or regex must be set"],
        ),
    ]);
}

/// Valid routes print back exactly as written, so stored objects do not change.
#[test]
fn typed_routes_round_trip() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: t, namespace: default}
spec:
  hosts: [a]
  http:
  - name: main
    route:
    - destination: {host: a}
      weight: 100
      headers: {request: {set: {x-a: "1"}}}
    fault:
      delay: {fixedDelay: 5s, percentage: {value: 10}}
      abort: {httpStatus: 503, percentage: {value: 0.5}}
    mirrors:
    - destination: {host: b, port: {number: 80}}
      percentage: {value: 100}
    corsPolicy:
      allowOrigins: [{prefix: "https://"}]
      allowCredentials: false
      maxAge: 1h
    headers:
      response: {add: {x-b: "2"}, remove: [x-c]}
  - delegate: {name: d, namespace: other}
"#;
    let report = tessera_model::load_str(
        std::path::Path::new("t.yaml"),
        text,
        &tessera_model::LoadOptions::default(),
    );
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    let written: serde_json::Value = serde_norway::from_str(text).unwrap();
    let printed = report.documents[0].resource.to_json();
    assert_eq!(printed["spec"], written["spec"]);
}
