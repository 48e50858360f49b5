//! DestinationRule traffic policies: each rule accepted and refused, with Istio's wording
//! and the field path.

mod support;

use support::{run, Case};

fn dr(cases: &[Case]) {
    run("networking.istio.io/v1", "DestinationRule", cases);
}

#[test]
fn traffic_policy_needs_a_setting_and_not_tunnel_with_proxy_protocol() {
    dr(&[
        ("tls only", "host: a\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL}}", &[]),
        (
            "empty",
            "host: a\ntrafficPolicy: {}",
            &["error: spec.trafficPolicy: traffic policy must have at least one field"],
        ),
        (
            "empty subset policy",
            "host: a\nsubsets:\n- name: v1\n  labels: {version: v1}\n  trafficPolicy: {}",
            &["error: spec.subsets[0].trafficPolicy: traffic policy must have at least one field"],
        ),
        (
            "tunnel and proxyProtocol",
            "host: a\ntrafficPolicy:\n  tunnel: {targetHost: proxy.example.com, targetPort: 8443}\n  proxyProtocol: {version: V2}",
            &["error: spec.trafficPolicy.proxyProtocol: tunnel and proxyProtocol must not be set together"],
        ),
        (
            "unknown field lists what is allowed",
            "host: a\ntrafficPolicy: {loadBalancr: {simple: RANDOM}}",
            &["error: spec.trafficPolicy.loadBalancr: unknown field \"loadBalancr\" (allowed here: connectionPool, loadBalancer, outlierDetection, portLevelSettings, proxyProtocol, retryBudget, tls, tunnel)"],
        ),
    ]);
}

#[test]
fn load_balancer() {
    dr(&[
        ("simple", "host: a\ntrafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}", &[]),
        (
            "simple value outside the enum",
            "host: a\ntrafficPolicy: {loadBalancer: {simple: LEAST_CONNECTION}}",
            &["error: spec.trafficPolicy.loadBalancer.simple: \"LEAST_CONNECTION\" is not one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST"],
        ),
        (
            "simple and consistentHash",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    simple: RANDOM\n    consistentHash: {useSourceIp: true}",
            &["error: spec.trafficPolicy.loadBalancer.consistentHash: only one of simple or consistentHash can be set (found simple and consistentHash)"],
        ),
        (
            "consistent hash on a header with maglev",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}",
            &[],
        ),
        (
            "consistent hash without a key is accepted",
            "host: a\ntrafficPolicy: {loadBalancer: {consistentHash: {ringHash: {minimumRingSize: 1024}}}}",
            &[],
        ),
        (
            "two hash keys",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpHeaderName: x-user, useSourceIp: false}",
            &["error: spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp: only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName can be set (found httpHeaderName and useSourceIp)"],
        ),
        (
            "ringHash and maglev",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {ringHash: {}, maglev: {tableSize: 65537}}",
            &["error: spec.trafficPolicy.loadBalancer.consistentHash.maglev: only one of ringHash or maglev can be set (found ringHash and maglev)"],
        ),
        (
            "cookie without a name",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpCookie: {ttl: 0s}}",
            &["error: spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name: name required for HttpCookie"],
        ),
        (
            "cookie with a session ttl",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpCookie: {name: user, ttl: 0s, path: /}}",
            &[],
        ),
        (
            "deprecated minimumRingSize",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {useSourceIp: true, minimumRingSize: 1024}",
            &["warning: spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead"],
        ),
        (
            "minimumRingSize with maglev",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {useSourceIp: true, minimumRingSize: 1024, maglev: {tableSize: 65537}}",
            &[
                "warning: spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
                "error: spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: only one of MinimumRingSize or Maglev/Ringhash can be specified",
            ],
        ),
        (
            "maglev without a size",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {useSourceIp: true, maglev: {}}",
            &[
                "error: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be set for maglev",
                "error: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be a prime number for maglev",
            ],
        ),
        (
            "maglev size not prime",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {useSourceIp: true, maglev: {tableSize: 65536}}",
            &["error: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be a prime number for maglev"],
        ),
        (
            "maglev size too large",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}",
            &["error: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be less than 5000011 for maglev"],
        ),
        (
            "unknown field in consistentHash",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpHeader: x-user}",
            &["error: spec.trafficPolicy.loadBalancer.consistentHash.httpHeader: unknown field \"httpHeader\" (allowed here: httpCookie, httpHeaderName, httpQueryParameterName, maglev, minimumRingSize, ringHash, useSourceIp)"],
        ),
        (
            "warmup",
            "host: a\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}}",
            &[],
        ),
        (
            "warmup without duration, out of range",
            "host: a\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN, warmup: {minimumPercent: 101, aggression: 0.5}}",
            &[
                "error: spec.trafficPolicy.loadBalancer.warmup.duration: duration is required",
                "error: spec.trafficPolicy.loadBalancer.warmup.minimumPercent: minimumPercent value should be less than or equal to 100",
                "error: spec.trafficPolicy.loadBalancer.warmup.aggression: aggression should be greater than or equal to 1",
            ],
        ),
        (
            "warmup duration below 1ms",
            "host: a\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 500us}}",
            &["error: spec.trafficPolicy.loadBalancer.warmup.duration: duration must be greater than 1ms"],
        ),
        (
            "warmupDurationSecs",
            "host: a\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 0s}",
            &["error: spec.trafficPolicy.loadBalancer.warmupDurationSecs: must be a valid duration greater than 1ms"],
        ),
        (
            "minimumPercent must be a number",
            "host: a\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 1m, minimumPercent: ten}}",
            &["error: spec.trafficPolicy.loadBalancer.warmup.minimumPercent: expected a number, found a string"],
        ),
    ]);
}

#[test]
fn locality_load_balancing() {
    dr(&[
        (
            "distribute adding up to 100",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - {from: us-west/zone1/*, to: {us-west/zone1/*: 80, us-west/zone2/*: 20}}",
            &[],
        ),
        (
            "distribute not adding up to 100",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - {from: us-west/zone1/*, to: {us-west/zone1/*: 80, us-west/zone2/*: 10}}",
            &["error: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: total locality weight 90 != 100"],
        ),
        (
            "a weight of 0",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - {from: us-west, to: {us-west: 100, us-east: 0}}",
            &["error: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to[us-east]: locality weight must be in range [1, 100]"],
        ),
        (
            "overlapping sources",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - {from: us-west, to: {us-west: 100}}\n      - {from: us-west/zone1, to: {us-west: 100}}",
            &["error: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute: locality us-west/zone1 overlap with previous specified ones"],
        ),
        (
            "distribute and failover",
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 3}\n  loadBalancer:\n    localityLbSetting:\n      distribute: [{from: us-west, to: {us-west: 100}}]\n      failover: [{from: us-west, to: us-east}]",
            &["error: spec.trafficPolicy.loadBalancer.localityLbSetting.failover: can not simultaneously specify 'distribute' and 'failover'"],
        ),
        (
            "failover with outlier detection",
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 3}\n  loadBalancer:\n    localityLbSetting:\n      failover: [{from: us-west, to: us-east}]",
            &[],
        ),
        (
            "failover without outlier detection",
            "host: a\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      failover: [{from: us-west, to: us-east}]",
            &["warning: spec.trafficPolicy.loadBalancer.localityLbSetting: outlier detection policy must be provided for failover"],
        ),
        (
            "failover to the same region, a zone, a wildcard",
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 3}\n  loadBalancer:\n    localityLbSetting:\n      failover:\n      - {from: us-west, to: us-west}\n      - {from: us-west/zone1, to: us-east}\n      - {from: us-*, to: eu}",
            &[
                "error: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: locality lb failover settings must specify different regions",
                "error: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1]: locality lb failover only specify region",
                "error: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[2]: locality lb failover region should not contain '*' wildcard",
            ],
        ),
        (
            "failover with a topology label in failoverPriority",
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 3}\n  loadBalancer:\n    localityLbSetting:\n      failover: [{from: us-west, to: us-east}]\n      failoverPriority: [topology.kubernetes.io/region]",
            &["error: spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[0]: can not simultaneously set 'failover' and topology label 'topology.kubernetes.io/region' in 'failover_priority'"],
        ),
    ]);
}

#[test]
fn connection_pool() {
    dr(&[
        (
            "tcp and http",
            "host: a\ntrafficPolicy:\n  connectionPool:\n    tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}}\n    http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 1, maxRetries: 3, idleTimeout: 1h, h2UpgradePolicy: UPGRADE}",
            &[],
        ),
        (
            "empty",
            "host: a\ntrafficPolicy: {connectionPool: {}}",
            &["error: spec.trafficPolicy.connectionPool: connection pool must have at least one field"],
        ),
        (
            "negative limits",
            "host: a\ntrafficPolicy:\n  connectionPool:\n    tcp: {maxConnections: -1}\n    http: {http1MaxPendingRequests: -1, http2MaxRequests: -1, maxRequestsPerConnection: -1, maxRetries: -1, maxConcurrentStreams: -1}",
            &[
                "error: spec.trafficPolicy.connectionPool.tcp.maxConnections: max connections must be non-negative",
                "error: spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests: http1 max pending requests must be non-negative",
                "error: spec.trafficPolicy.connectionPool.http.http2MaxRequests: http2 max requests must be non-negative",
                "error: spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection: max requests per connection must be non-negative",
                "error: spec.trafficPolicy.connectionPool.http.maxRetries: max retries must be non-negative",
                "error: spec.trafficPolicy.connectionPool.http.maxConcurrentStreams: max concurrent streams must be non-negative",
            ],
        ),
        (
            "use client protocol with UPGRADE",
            "host: a\ntrafficPolicy:\n  connectionPool:\n    http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}",
            &["error: spec.trafficPolicy.connectionPool.http.useClientProtocol: use client protocol must not be true when H2UpgradePolicy is UPGRADE"],
        ),
        (
            "durations",
            "host: a\ntrafficPolicy:\n  connectionPool:\n    tcp: {connectTimeout: 0s, maxConnectionDuration: 1.0005s, idleTimeout: 0s, tcpKeepalive: {time: soon}}\n    http: {idleTimeout: 100us}",
            &[
                "error: spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration must be greater than 1ms",
                "error: spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration: only durations to ms precision are supported",
                "error: spec.trafficPolicy.connectionPool.tcp.idleTimeout: duration must be greater than 1ms",
                "error: spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time: \"soon\" is not a duration; use e.g. 10s, 1.5s, 500ms, 1m",
                "error: spec.trafficPolicy.connectionPool.http.idleTimeout: duration must be greater than 1ms",
            ],
        ),
        (
            "h2UpgradePolicy outside the enum",
            "host: a\ntrafficPolicy:\n  connectionPool:\n    http: {h2UpgradePolicy: ALWAYS}",
            &["error: spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: \"ALWAYS\" is not one of DEFAULT, DO_NOT_UPGRADE, UPGRADE"],
        ),
        (
            "a limit that does not fit 32 bits",
            "host: a\ntrafficPolicy:\n  connectionPool:\n    tcp: {maxConnections: 3000000000}",
            &["error: spec.trafficPolicy.connectionPool.tcp.maxConnections: 3000000000 is out of range for a 32-bit integer (-2147483648..=2147483647)"],
        ),
    ]);
}

#[test]
fn outlier_detection() {
    dr(&[
        (
            "typical",
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100, minHealthPercent: 0}",
            &[],
        ),
        (
            "percentages out of range",
            "host: a\ntrafficPolicy:\n  outlierDetection: {maxEjectionPercent: 101, minHealthPercent: -1}",
            &[
                "error: spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 101 is not in range 0..100",
                "error: spec.trafficPolicy.outlierDetection.minHealthPercent: percentage -1 is not in range 0..100",
            ],
        ),
        (
            "durations",
            "host: a\ntrafficPolicy:\n  outlierDetection: {interval: 0s, baseEjectionTime: 1.5ms}",
            &[
                "error: spec.trafficPolicy.outlierDetection.interval: duration must be greater than 1ms",
                "error: spec.trafficPolicy.outlierDetection.baseEjectionTime: only durations to ms precision are supported",
            ],
        ),
        (
            "deprecated consecutiveErrors",
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutiveErrors: 5}",
            &["warning: spec.trafficPolicy.outlierDetection.consecutiveErrors: outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead"],
        ),
        (
            "local origin failures without the split",
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutiveLocalOriginFailures: 5}",
            &["error: spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false"],
        ),
        (
            "local origin failures with the split",
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutiveLocalOriginFailures: 5, splitExternalLocalOriginErrors: true}",
            &[],
        ),
        (
            "a negative count",
            "host: a\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: -1}",
            &["error: spec.trafficPolicy.outlierDetection.consecutive5xxErrors: -1 is out of range for a 32-bit unsigned integer (0..=4294967295)"],
        ),
    ]);
}

#[test]
fn tunnel_and_proxy_protocol() {
    dr(&[
        ("tunnel", "host: a\ntrafficPolicy:\n  tunnel: {protocol: POST, targetHost: 10.0.0.1, targetPort: 443}", &[]),
        (
            "tunnel protocol, host and port",
            "host: a\ntrafficPolicy:\n  tunnel: {protocol: GET, targetHost: not_a_host, targetPort: 0}",
            &[
                "error: spec.trafficPolicy.tunnel.protocol: tunnel protocol must be \"CONNECT\" or \"POST\"",
                "error: spec.trafficPolicy.tunnel.targetHost: tunnel target host must be valid FQDN or IP address: domain name \"not_a_host\" invalid (label \"not_a_host\" invalid); not_a_host is not a valid IP",
                "error: spec.trafficPolicy.tunnel.targetPort: tunnel target port is invalid: port number 0 must be in the range 1..65535",
            ],
        ),
        (
            "tunnel without target",
            "host: a\ntrafficPolicy:\n  tunnel: {protocol: CONNECT}",
            &[
                "error: spec.trafficPolicy.tunnel.targetHost: missing required field \"targetHost\"",
                "error: spec.trafficPolicy.tunnel.targetPort: missing required field \"targetPort\"",
            ],
        ),
        ("proxy protocol", "host: a\ntrafficPolicy:\n  proxyProtocol: {version: V1}", &[]),
        (
            "proxy protocol version",
            "host: a\ntrafficPolicy:\n  proxyProtocol: {version: V3}",
            &["error: spec.trafficPolicy.proxyProtocol.version: \"V3\" is not one of V1, V2"],
        ),
    ]);
}

#[test]
fn port_level_settings() {
    dr(&[
        (
            "port-level load balancer",
            "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n    loadBalancer: {simple: LEAST_REQUEST}\n    connectionPool: {tcp: {maxConnections: 10}}",
            &[],
        ),
        (
            "no port, no setting",
            "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - {}",
            &[
                "error: spec.trafficPolicy.portLevelSettings[0].port: portTrafficPolicy must have valid port",
                "error: spec.trafficPolicy.portLevelSettings[0]: port traffic policy must have at least one field",
            ],
        ),
        (
            "no tunnel per port",
            "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n    tunnel: {targetHost: proxy, targetPort: 80}",
            &[
                "error: spec.trafficPolicy.portLevelSettings[0].tunnel: unknown field \"tunnel\" (allowed here: connectionPool, loadBalancer, outlierDetection, port, tls)",
            ],
        ),
        (
            "settings checked per port",
            "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n    outlierDetection: {maxEjectionPercent: 200}",
            &["error: spec.trafficPolicy.portLevelSettings[0].outlierDetection.maxEjectionPercent: percentage 200 is not in range 0..100"],
        ),
    ]);
}

/// Valid traffic policies print back exactly as written, so stored objects do not change.
#[test]
fn typed_traffic_policies_round_trip() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: t, namespace: default}
spec:
  host: a
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 0s}, ringHash: {minimumRingSize: 1024}}
      localityLbSetting: {enabled: true, failover: [{from: a, to: b}]}
      warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}
    connectionPool:
      tcp: {maxConnections: 0, connectTimeout: 30ms, tcpKeepalive: {probes: 9}}
      http: {useClientProtocol: false, h2UpgradePolicy: DO_NOT_UPGRADE}
    outlierDetection: {consecutive5xxErrors: 0, splitExternalLocalOriginErrors: false, interval: 1m}
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}
    tunnel: {protocol: CONNECT, targetHost: proxy.example.com, targetPort: 3128}
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
