//! Service port protocol classification, as Istio's `ConvertProtocol` does it
//! (Istio's protocol selection by port name and `appProtocol`), and the sidecar listener class each protocol gets.

use std::fmt;

/// Istio's protocol instances for a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
    /// Not recognised: the sidecar sniffs the protocol (AUTO).
    Unsupported,
}

/// Which kind of sidecar listener a port gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerClass {
    /// HTTP connection manager (L7).
    Http,
    /// Opaque TCP proxy (possibly with a protocol-specific network filter).
    Tcp,
    /// Protocol sniffing.
    Auto,
    /// No listener (UDP is not proxied).
    None,
}

impl Protocol {
    pub fn listener_class(self) -> ListenerClass {
        match self {
            Self::Http | Self::Http2 | Self::HttpProxy | Self::Grpc | Self::GrpcWeb => {
                ListenerClass::Http
            }
            Self::Tcp | Self::Https | Self::Tls | Self::Mongo | Self::Redis | Self::Mysql => {
                ListenerClass::Tcp
            }
            Self::Unsupported => ListenerClass::Auto,
            Self::Udp => ListenerClass::None,
        }
    }

    /// Istio's `IsHTTP`: the L7 protocols.
    pub fn is_http(self) -> bool {
        self.listener_class() == ListenerClass::Http
    }

    /// Istio's spelling of the protocol (`protocol.Instance` string values), as
    /// shown in config dumps and `istioctl` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Http2 => "HTTP2",
            Self::HttpProxy => "HTTP_PROXY",
            Self::Grpc => "GRPC",
            Self::GrpcWeb => "GRPC-Web",
            Self::Https => "HTTPS",
            Self::Tls => "TLS",
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Mongo => "Mongo",
            Self::Redis => "Redis",
            Self::Mysql => "MySQL",
            Self::Unsupported => "UnsupportedProtocol",
        }
    }

    /// Istio's `protocol.Parse`: case-insensitive exact names.
    fn parse(s: &str) -> Self {
        const NAMES: &[(&str, Protocol)] = &[
            ("tcp", Protocol::Tcp),
            ("udp", Protocol::Udp),
            ("grpc", Protocol::Grpc),
            ("grpc-web", Protocol::GrpcWeb),
            ("http", Protocol::Http),
            ("http_proxy", Protocol::HttpProxy),
            ("http2", Protocol::Http2),
            ("https", Protocol::Https),
            ("tls", Protocol::Tls),
            ("mongo", Protocol::Mongo),
            ("redis", Protocol::Redis),
            ("mysql", Protocol::Mysql),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map_or(Self::Unsupported, |(_, p)| *p)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ports where sniffing would break server-first or binary protocols, so an
/// unrecognised name means TCP (SMTP, DNS, MySQL, MongoDB).
const WELL_KNOWN_TCP_PORTS: [u32; 4] = [25, 53, 3306, 27017];

const GRPC_WEB: &str = "grpc-web";

/// Classifies a Service port.
///
/// `name` is the port name, `app_protocol` the Kubernetes `appProtocol`,
/// `transport` the Kubernetes `protocol` (`TCP`/`UDP`/`SCTP`; `None` = TCP).
/// Steps: UDP transport → UDP; a present `appProtocol` replaces the name (the
/// Kubernetes-standard `kubernetes.io/h2c`, `ws`, `wss` map to HTTP2, HTTP,
/// HTTPS); a `grpc-web` prefix → GRPC-Web; else the text before the first `-`
/// is parsed case-insensitively; unrecognised → `Unsupported` (sniffing) except
/// on ports 25, 53, 3306, 27017, which become TCP.
pub fn classify(
    name: Option<&str>,
    app_protocol: Option<&str>,
    transport: Option<&str>,
    port: u32,
) -> Protocol {
    // Kubernetes only accepts "UDP"; ignoring case costs nothing and avoids
    // proxying UDP if a caller lowercased it.
    if transport.is_some_and(|t| t.eq_ignore_ascii_case("UDP")) {
        return Protocol::Udp;
    }
    let name = match app_protocol {
        // Exact match only, as Istio: `kubernetes.io/h2c-foo` is not special.
        Some("kubernetes.io/h2c") => return Protocol::Http2,
        Some("kubernetes.io/ws") => return Protocol::Http,
        Some("kubernetes.io/wss") => return Protocol::Https,
        // Once appProtocol is set the port name is ignored, even if empty.
        Some(ap) => ap,
        None => name.unwrap_or(""),
    };
    // Checked before the '-' split because the prefix itself contains a '-'.
    // Byte-wise so non-ASCII names cannot cause a slicing panic.
    if name
        .as_bytes()
        .get(..GRPC_WEB.len())
        .is_some_and(|b| b.eq_ignore_ascii_case(GRPC_WEB.as_bytes()))
    {
        return Protocol::GrpcWeb;
    }
    let prefix = name.split('-').next().unwrap_or(name);
    match Protocol::parse(prefix) {
        Protocol::Unsupported if WELL_KNOWN_TCP_PORTS.contains(&port) => Protocol::Tcp,
        p => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ListenerClass as L;
    use Protocol as P;

    struct Row {
        id: &'static str,
        name: Option<&'static str>,
        app_protocol: Option<&'static str>,
        transport: Option<&'static str>,
        port: u32,
        want: Protocol,
        class: ListenerClass,
    }

    const fn row(
        id: &'static str,
        name: Option<&'static str>,
        app_protocol: Option<&'static str>,
        transport: Option<&'static str>,
        port: u32,
        want: Protocol,
        class: ListenerClass,
    ) -> Row {
        Row {
            id,
            name,
            app_protocol,
            transport,
            port,
            want,
            class,
        }
    }

    const ROWS: &[Row] = &[
        row("PROTO-01", Some("http"), None, None, 8000, P::Http, L::Http),
        row(
            "PROTO-02",
            Some("http-web"),
            None,
            None,
            8000,
            P::Http,
            L::Http,
        ),
        row(
            "PROTO-03",
            Some("HTTP2-api"),
            None,
            None,
            8000,
            P::Http2,
            L::Http,
        ),
        row("PROTO-04", Some("https"), None, None, 443, P::Https, L::Tcp),
        row(
            "PROTO-04",
            Some("https-admin"),
            None,
            None,
            8443,
            P::Https,
            L::Tcp,
        ),
        row("PROTO-05", Some("tls-db"), None, None, 5432, P::Tls, L::Tcp),
        row("PROTO-06", Some("tcp"), None, None, 9000, P::Tcp, L::Tcp),
        row(
            "PROTO-07",
            Some("grpc-web-x"),
            None,
            None,
            8080,
            P::GrpcWeb,
            L::Http,
        ),
        row(
            "PROTO-08",
            Some("web"),
            None,
            None,
            8080,
            P::Unsupported,
            L::Auto,
        ),
        row("PROTO-09", None, None, None, 3306, P::Tcp, L::Tcp),
        row(
            "PROTO-10",
            Some("http"),
            Some("https"),
            None,
            8443,
            P::Https,
            L::Tcp,
        ),
        row(
            "PROTO-11",
            Some("http"),
            Some("foo"),
            None,
            8080,
            P::Unsupported,
            L::Auto,
        ),
        row(
            "PROTO-12",
            None,
            Some("kubernetes.io/h2c"),
            None,
            8080,
            P::Http2,
            L::Http,
        ),
        row(
            "PROTO-13",
            None,
            Some("kubernetes.io/wss"),
            None,
            443,
            P::Https,
            L::Tcp,
        ),
        row(
            "PROTO-14",
            Some("http"),
            None,
            Some("UDP"),
            53,
            P::Udp,
            L::None,
        ),
        row(
            "PROTO-15",
            Some("mongo"),
            None,
            None,
            27017,
            P::Mongo,
            L::Tcp,
        ),
        row(
            "PROTO-15",
            Some("redis"),
            None,
            None,
            6379,
            P::Redis,
            L::Tcp,
        ),
        row(
            "PROTO-15",
            Some("mysql"),
            None,
            None,
            3306,
            P::Mysql,
            L::Tcp,
        ),
        // Edges of the same algorithm.
        row(
            "PROTO-12 (ws)",
            None,
            Some("kubernetes.io/ws"),
            None,
            80,
            P::Http,
            L::Http,
        ),
        row(
            "PROTO-12 (not exact)",
            None,
            Some("kubernetes.io/h2c-x"),
            None,
            80,
            P::Unsupported,
            L::Auto,
        ),
        row(
            "PROTO-07 (case)",
            Some("GRPC-Web"),
            None,
            None,
            80,
            P::GrpcWeb,
            L::Http,
        ),
        row(
            "PROTO-07 (bare prefix)",
            Some("grpc-webfoo"),
            None,
            None,
            80,
            P::GrpcWeb,
            L::Http,
        ),
        row(
            "PROTO-07 (appProtocol)",
            Some("tcp"),
            Some("grpc-web"),
            None,
            80,
            P::GrpcWeb,
            L::Http,
        ),
        row(
            "PROTO-02 (grpc)",
            Some("grpc-api"),
            None,
            None,
            80,
            P::Grpc,
            L::Http,
        ),
        row(
            "PROTO-02 (http_proxy)",
            Some("http_proxy"),
            None,
            None,
            80,
            P::HttpProxy,
            L::Http,
        ),
        row(
            "PROTO-02 (no prefix match)",
            Some("httpx-api"),
            None,
            None,
            80,
            P::Unsupported,
            L::Auto,
        ),
        row(
            "PROTO-08 (unnamed)",
            None,
            None,
            None,
            8080,
            P::Unsupported,
            L::Auto,
        ),
        row(
            "PROTO-08 (empty name)",
            Some(""),
            None,
            None,
            8080,
            P::Unsupported,
            L::Auto,
        ),
        row("PROTO-09 (25)", None, None, None, 25, P::Tcp, L::Tcp),
        row("PROTO-09 (53)", Some("dns"), None, None, 53, P::Tcp, L::Tcp),
        row(
            "PROTO-09 (27017)",
            Some("db"),
            None,
            None,
            27017,
            P::Tcp,
            L::Tcp,
        ),
        row(
            "PROTO-09 (recognised name wins)",
            Some("http"),
            None,
            None,
            3306,
            P::Http,
            L::Http,
        ),
        row(
            "PROTO-11 (empty appProtocol)",
            Some("http"),
            Some(""),
            None,
            8080,
            P::Unsupported,
            L::Auto,
        ),
        row(
            "PROTO-14 (transport TCP)",
            Some("http"),
            None,
            Some("TCP"),
            80,
            P::Http,
            L::Http,
        ),
        row(
            "PROTO-14 (SCTP uses the name)",
            Some("tcp"),
            None,
            Some("SCTP"),
            80,
            P::Tcp,
            L::Tcp,
        ),
        row(
            "PROTO-14 (name udp)",
            Some("udp-dns"),
            None,
            None,
            5353,
            P::Udp,
            L::None,
        ),
        row(
            "PROTO-08 (non-ASCII)",
            Some("grpc-wé"),
            None,
            None,
            80,
            P::Grpc,
            L::Http,
        ),
        row(
            "PROTO-08 (non-ASCII short)",
            Some("é"),
            None,
            None,
            80,
            P::Unsupported,
            L::Auto,
        ),
    ];

    #[test]
    fn classify_table() {
        for r in ROWS {
            let got = classify(r.name, r.app_protocol, r.transport, r.port);
            assert_eq!(got, r.want, "{}", r.id);
            assert_eq!(got.listener_class(), r.class, "{}", r.id);
            assert_eq!(got.is_http(), r.class == L::Http, "{}", r.id);
        }
    }

    #[test]
    fn names_table() {
        let rows = [
            ("PROTO-01", P::Http, "HTTP"),
            ("PROTO-03", P::Http2, "HTTP2"),
            ("PROTO-02", P::HttpProxy, "HTTP_PROXY"),
            ("PROTO-02", P::Grpc, "GRPC"),
            ("PROTO-07", P::GrpcWeb, "GRPC-Web"),
            ("PROTO-04", P::Https, "HTTPS"),
            ("PROTO-05", P::Tls, "TLS"),
            ("PROTO-06", P::Tcp, "TCP"),
            ("PROTO-14", P::Udp, "UDP"),
            ("PROTO-15", P::Mongo, "Mongo"),
            ("PROTO-15", P::Redis, "Redis"),
            ("PROTO-15", P::Mysql, "MySQL"),
            ("PROTO-08", P::Unsupported, "UnsupportedProtocol"),
        ];
        for (id, p, want) in rows {
            assert_eq!(p.as_str(), want, "{id}");
            assert_eq!(p.to_string(), want, "{id}");
        }
    }
}
