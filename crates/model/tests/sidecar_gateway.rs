//! Sidecar ingress ports, connection pools and outbound traffic policy, and Gateway
//! certificate lists: each rule accepted and refused, with Istio's wording and the field
//! path.

mod support;

use support::run;

#[test]
fn sidecar_ingress() {
    run(
        "networking.istio.io/v1",
        "Sidecar",
        &[
            (
                "a port without protocol is detected",
                "ingress:\n- port: {number: 9080, name: web}\n  defaultEndpoint: 127.0.0.1:8080",
                &[],
            ),
            (
                "a protocol that is not one",
                "ingress:\n- port: {number: 9080, protocol: HTTP3}",
                &["error: spec.ingress[0].port.protocol: unrecognized protocol \"HTTP3\"; supported: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS, REDIS, MYSQL, UDP"],
            ),
            (
                "tls on a port without protocol",
                "ingress:\n- port: {number: 9080}\n  tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}",
                &["error: spec.ingress[0].tls: server cannot have TLS settings for non HTTPS/TLS ports (port 9080 is unset)"],
            ),
            (
                "per-port connection pool",
                "ingress:\n- port: {number: 9080, protocol: HTTP}\n  connectionPool: {http: {http1MaxPendingRequests: 10}}",
                &[],
            ),
            (
                "HTTP pool settings on a TCP port",
                "ingress:\n- port: {number: 9080, protocol: TCP, name: db}\n  connectionPool: {tcp: {maxConnections: 10}, http: {maxRetries: 1}}",
                &["warning: spec.ingress[0].connectionPool.http: sidecar: HTTP connection pool settings are configured for port 9080 (\"db\") but its protocol is not HTTP (TCP); only TCP settings will apply"],
            ),
            (
                "inbound connection pool",
                "inboundConnectionPool: {tcp: {maxConnections: -5}}",
                &["error: spec.inboundConnectionPool.tcp.maxConnections: max connections must be non-negative"],
            ),
            (
                "egress scoped to namespaces and hosts",
                "egress:\n- port: {number: 9080, protocol: HTTP}\n  hosts: [\"prod/*\"]\n- hosts: [\"./*\", \"istio-system/*\", \"*/*.example.com\", \"~/*\"]",
                &[],
            ),
            (
                "egress hosts Istio refuses",
                "egress:\n- hosts: [db.prod.svc.cluster.local, \"prod/db\", \"Prod_1/*\", \"/x.y\"]",
                &[
                    "error: spec.egress[0].hosts[0]: host must be of form namespace/dnsName",
                    "error: spec.egress[0].hosts[1]: short names (non FQDN) are not allowed",
                    "error: spec.egress[0].hosts[2]: invalid namespace value \"Prod_1\" in sidecar",
                    "error: spec.egress[0].hosts[3]: config namespace and dnsName in host entry cannot be empty",
                ],
            ),
            (
                "egress listeners out of order",
                "egress:\n- hosts: [\"./*\"]\n- port: {number: 80}\n  hosts: []\n- port: {number: 80}\n  hosts: [\"./*\"]",
                &[
                    "error: spec.egress[0]: sidecar: the egress listener with empty port should be the last listener in the list",
                    "error: spec.egress[1].hosts: sidecar: egress listener must contain at least one host",
                    "error: spec.egress[2].port.number: sidecar: ports on IP bound listeners must be unique",
                ],
            ),
            (
                "nothing at all",
                "workloadSelector: {labels: {app: a}}",
                &["error: spec: sidecar: empty configuration provided"],
            ),
        ],
    );
}

#[test]
fn sidecar_outbound_traffic_policy() {
    run(
        "networking.istio.io/v1",
        "Sidecar",
        &[
            ("registry only", "outboundTrafficPolicy: {mode: REGISTRY_ONLY}", &[]),
            (
                "allow any through an egress proxy",
                "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {host: egress.example.com, port: {number: 3128}}",
                &[],
            ),
            (
                "a mode outside the enum",
                "outboundTrafficPolicy: {mode: ALLOW_ANY_DYNAMIC_DNS}",
                &["error: spec.outboundTrafficPolicy.mode: \"ALLOW_ANY_DYNAMIC_DNS\" is not one of REGISTRY_ONLY, ALLOW_ANY"],
            ),
            (
                "an egress proxy without ALLOW_ANY",
                "outboundTrafficPolicy:\n  egressProxy: {host: egress.example.com, port: {number: 3128}}",
                &["error: spec.outboundTrafficPolicy.egressProxy: sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode"],
            ),
            (
                "an egress proxy without a port",
                "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {host: egress.example.com}",
                &["error: spec.outboundTrafficPolicy.egressProxy.port: sidecar: egress_proxy port must be non-nil"],
            ),
            (
                "an egress proxy host that is not a name",
                "outboundTrafficPolicy:\n  mode: ALLOW_ANY\n  egressProxy: {host: \"*.example.com\", subset: \"\", port: {number: 70000}}",
                &[
                    "error: spec.outboundTrafficPolicy.egressProxy.host: domain name \"*.example.com\" invalid (label \"*\" invalid)",
                    "error: spec.outboundTrafficPolicy.egressProxy.subset: subset name cannot be empty",
                    "error: spec.outboundTrafficPolicy.egressProxy.port.number: port number 70000 must be in the range 1..65535",
                ],
            ),
            (
                "unknown field",
                "outboundTrafficPolicy: {mode: ALLOW_ANY, egress: {host: a}}",
                &["error: spec.outboundTrafficPolicy.egress: unknown field \"egress\" (allowed here: egressProxy, mode)"],
            ),
        ],
    );
}

#[test]
fn gateway_certificate_lists() {
    let server = |tls: &str| {
        format!(
            "selector: {{istio: ingressgateway}}\nservers:\n- port: {{number: 443, name: https, protocol: HTTPS}}\n  hosts: [a.example.com]\n  tls: {tls}"
        )
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            server("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /rsa.crt, privateKey: /rsa.key}, {serverCertificate: /ec.crt, privateKey: /ec.key}]}"),
            vec![],
        ),
        (
            server("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /rsa.crt}]}"),
            vec!["error: spec.servers[0].tls.tlsCertificates[0].privateKey: SIMPLE TLS requires a private key"],
        ),
        (
            server("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /a, privateKey: /a}, {serverCertificate: /b, privateKey: /b}, {serverCertificate: /c, privateKey: /c}]}"),
            vec!["error: spec.servers[0].tls.tlsCertificates: tlsCertificates must have at most 2 items (it has 3)"],
        ),
        (
            server("{mode: SIMPLE, tlsCertificates: []}"),
            vec!["error: spec.servers[0].tls.tlsCertificates: tlsCertificates must have at least 1 item"],
        ),
        (
            server("{mode: MUTUAL, tlsCertificates: [{serverCertificate: /a, privateKey: /a}]}"),
            vec!["error: spec.servers[0].tls.caCertificates: MUTUAL TLS requires a client CA bundle"],
        ),
        (
            server("{mode: MUTUAL, tlsCertificates: [{serverCertificate: /a, privateKey: /a, caCertificates: /ca}]}"),
            vec![],
        ),
        (
            server("{mode: ISTIO_MUTUAL, tlsCertificates: [{serverCertificate: /a, privateKey: /a}]}"),
            vec!["error: spec.servers[0].tls.tlsCertificates: ISTIO_MUTUAL TLS cannot have associated tlsCertificates"],
        ),
        (
            server("{mode: SIMPLE, credentialName: a, tlsCertificates: [{serverCertificate: /a, privateKey: /a}]}"),
            vec!["error: spec.servers[0].tls: only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified"],
        ),
        (
            server("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /a, privateKey: /a, certificateChain: /b}]}"),
            vec!["error: spec.servers[0].tls.tlsCertificates[0].certificateChain: unknown field \"certificateChain\" (allowed here: caCertificates, privateKey, serverCertificate)"],
        ),
        (
            server("{mode: SIMPLE, credentialNames: [a, b, c]}"),
            vec!["error: spec.servers[0].tls.credentialNames: credentialNames must have at most 2 items (it has 3)"],
        ),
    ];
    let cases: Vec<support::Case> = cases
        .iter()
        .map(|(spec, want)| (spec.as_str(), spec.as_str(), want.as_slice()))
        .collect();
    run("networking.istio.io/v1", "Gateway", &cases);
}
