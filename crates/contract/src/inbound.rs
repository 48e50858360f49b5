//! The inbound decision: what a sidecar does with a connection toward one of its
//! workload's ports, from the port's declared protocol, its effective mTLS mode, whether
//! it terminates the user's TLS (a Sidecar ingress listener with `tls`), and what
//! arrives. The proxy calls [`decide`] on every connection with what it detected in the
//! first bytes; `tessera explain` calls it with what the client's sidecar is configured to
//! send. One function, so the tool and the data path cannot disagree.
//!
//! The rules are Istio's inbound filter chains:
//! - DISABLE: no TLS inspection, whatever arrives is plaintext to the sidecar;
//! - STRICT: any TLS is terminated as mesh mTLS with a required client certificate;
//!   plaintext (or silence) is reset;
//! - PERMISSIVE: TLS offering an `istio*` ALPN token is mesh mTLS and terminated; other
//!   TLS belongs to the app and passes through, except on a port declared HTTP, which
//!   has no chain for it and resets; plaintext goes to the app;
//! - a port that terminates the user's TLS takes only TLS.

use crate::config::{InboundMode, PortProtocol};

/// What the first bytes of a connection are, as the decision needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arrival {
    /// A TLS ClientHello. `mesh`: its ALPN offers one of Istio's mesh tokens (a sidecar's
    /// mTLS; DestinationRule SIMPLE/MUTUAL and the apps' own TLS offer none); `http`: a
    /// token says the payload is HTTP (`istio-http/*`, `istio-h2`).
    Tls { mesh: bool, http: bool },
    /// Bytes that are not TLS; `http`: HTTP/1 or the HTTP/2 prior-knowledge preface.
    Plaintext { http: bool },
    /// Nothing before the detection timeout (a server-first protocol).
    Silent,
}

impl Arrival {
    pub fn is_tls(self) -> bool {
        matches!(self, Arrival::Tls { .. })
    }
}

/// The port as the decision reads it from the proxy's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRule {
    pub protocol: PortProtocol,
    pub mode: InboundMode,
    /// A Sidecar ingress listener terminates TLS with the user's certificate here.
    pub user_tls: bool,
}

impl PortRule {
    /// The port as the configuration pushed to its sidecar has it.
    pub fn of(port: &crate::config::InboundPort) -> PortRule {
        PortRule {
            protocol: port.protocol,
            mode: port.mode,
            user_tls: port.tls.is_some(),
        }
    }

    /// Whether the first bytes are read before deciding. A DISABLE port with a declared
    /// protocol has nothing to choose: its bytes go to the app as they come (Istio turns
    /// the TLS inspector off there).
    pub fn inspects(&self) -> bool {
        self.user_tls || !(self.mode == InboundMode::Disable && self.protocol != PortProtocol::Auto)
    }
}

/// What the bytes after any TLS the sidecar terminates are handled as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    Http,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundAction {
    /// Terminate mesh mTLS (a mesh client certificate required), then handle the payload.
    TerminateMesh(Payload),
    /// Terminate TLS with the user's certificate (Sidecar ingress), then the payload.
    TerminateUser(Payload),
    /// Plaintext to the app: HTTP at L7 (XFCC stripped), or opaque bytes.
    Plain(Payload),
    /// The application's own TLS: bytes pass untouched.
    Passthrough,
    /// No chain matches: close the connection with a reset (Envoy's
    /// `filter_chain_not_found`).
    Reset(Refusal),
}

/// Why a sidecar or gateway refused a connection, as counted, logged and reported in
/// edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// STRICT and the client sent plaintext.
    StrictPlaintext,
    /// STRICT and the client sent nothing before the detection timeout.
    StrictSilent,
    /// A PERMISSIVE port declared HTTP got TLS without a mesh ALPN.
    NonMeshTlsOnHttpPort,
    /// The mesh TLS handshake failed (no or bad client certificate).
    Handshake,
    /// An HTTP port received bytes that are not HTTP (Envoy's `400 DPE`).
    NotHttp,
    /// A port that terminates the client's TLS (Sidecar ingress tls, gateway HTTPS) got
    /// plaintext, or TLS for a name no server answers.
    NoTlsChain,
    /// The certificate such a port serves is not available (file or Secret missing).
    TlsUnavailable,
    /// The client's TLS handshake with the user's certificate failed.
    TlsHandshake,
    /// A gateway server has no route for the connection (Envoy's `NR`), or the route's
    /// destination is not a service of the mesh (`NC`).
    NoRoute,
    /// An AuthorizationPolicy denies the connection (Envoy's RBAC network filter).
    AuthorizationDenied,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::StrictPlaintext,
        Refusal::StrictSilent,
        Refusal::NonMeshTlsOnHttpPort,
        Refusal::Handshake,
        Refusal::NotHttp,
        Refusal::NoTlsChain,
        Refusal::TlsUnavailable,
        Refusal::TlsHandshake,
        Refusal::NoRoute,
        Refusal::AuthorizationDenied,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::StrictPlaintext => "strict_plaintext",
            Refusal::StrictSilent => "strict_no_bytes",
            Refusal::NonMeshTlsOnHttpPort => "tls_without_mesh_alpn_on_http_port",
            Refusal::Handshake => "mtls_handshake_failed",
            Refusal::NotHttp => "not_http_on_http_port",
            Refusal::NoTlsChain => "filter_chain_not_found",
            Refusal::TlsUnavailable => "certificate_not_available",
            Refusal::TlsHandshake => "tls_handshake_failed",
            Refusal::NoRoute => "route_not_found",
            Refusal::AuthorizationDenied => "rbac_access_denied",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            Refusal::StrictPlaintext => {
                "the port is STRICT and the client sent plaintext (it needs mesh mTLS: a sidecar, or a DestinationRule that does not DISABLE tls)"
            }
            Refusal::StrictSilent => {
                "the port is STRICT and the client sent nothing to detect (server-first protocols cannot be mesh mTLS without a client sidecar)"
            }
            Refusal::NonMeshTlsOnHttpPort => {
                "PERMISSIVE HTTP port and TLS without an istio ALPN: not mesh mTLS, and an HTTP port does not pass app TLS through (declare the port https/tls, or use STRICT)"
            }
            Refusal::Handshake => "the mesh mTLS handshake failed",
            Refusal::NotHttp => {
                "the client's bytes are not HTTP; answered 400 and closed (TLS here means the client sends TLS to a port that serves plaintext HTTP, e.g. a DestinationRule ISTIO_MUTUAL toward a DISABLE port)"
            }
            Refusal::NoTlsChain => {
                "no filter chain matches: the port only accepts TLS for the names its servers list (plaintext, or a server name no Gateway server or Sidecar ingress listener answers)"
            }
            Refusal::TlsUnavailable => {
                "the certificate this port serves is not available yet (a Secret or mounted file is missing or unreadable)"
            }
            Refusal::TlsHandshake => "the client's TLS handshake failed",
            Refusal::NoRoute => {
                "no route takes the connection: the server's routes match neither its SNI nor the port, or the route's destination is not a service of the mesh"
            }
            Refusal::AuthorizationDenied => {
                "an AuthorizationPolicy denies the connection: it is closed after the handshake"
            }
        }
    }
}

/// The decision for one connection toward `port`.
pub fn decide(port: PortRule, arrival: Arrival) -> InboundAction {
    use InboundAction::*;
    let declared = match port.protocol {
        PortProtocol::Http | PortProtocol::Http2 => Some(Payload::Http),
        PortProtocol::Tcp => Some(Payload::Tcp),
        PortProtocol::Auto => None,
    };
    let sniffed = match arrival {
        Arrival::Plaintext { http: true } => Payload::Http,
        _ => Payload::Tcp,
    };
    // What a terminated mesh connection carries: the port's protocol, else what the
    // mesh ALPN token says.
    let mesh_payload =
        |http: bool| declared.unwrap_or(if http { Payload::Http } else { Payload::Tcp });
    if port.user_tls {
        return match arrival {
            Arrival::Tls { .. } => TerminateUser(declared.unwrap_or(Payload::Tcp)),
            _ => Reset(Refusal::NoTlsChain),
        };
    }
    match (port.mode, arrival) {
        (InboundMode::Disable, _) => Plain(declared.unwrap_or(sniffed)),
        (InboundMode::Strict, Arrival::Tls { http, .. }) => TerminateMesh(mesh_payload(http)),
        (InboundMode::Strict, Arrival::Silent) => Reset(Refusal::StrictSilent),
        (InboundMode::Strict, Arrival::Plaintext { .. }) => Reset(Refusal::StrictPlaintext),
        (InboundMode::Permissive, Arrival::Tls { mesh: true, http }) => {
            TerminateMesh(mesh_payload(http))
        }
        (InboundMode::Permissive, Arrival::Tls { mesh: false, .. }) => match declared {
            Some(Payload::Http) => Reset(Refusal::NonMeshTlsOnHttpPort),
            _ => Passthrough,
        },
        // Silence is not a hang (Istio's protocol detection times out to TCP).
        (InboundMode::Permissive, Arrival::Plaintext { .. } | Arrival::Silent) => {
            Plain(declared.unwrap_or(sniffed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InboundAction::*;
    use InboundMode::*;
    use PortProtocol::*;

    const MESH_HTTP: Arrival = Arrival::Tls {
        mesh: true,
        http: true,
    };
    const MESH_TCP: Arrival = Arrival::Tls {
        mesh: true,
        http: false,
    };
    const OTHER_TLS: Arrival = Arrival::Tls {
        mesh: false,
        http: false,
    };
    const H1: Arrival = Arrival::Plaintext { http: true };
    const RAW: Arrival = Arrival::Plaintext { http: false };

    fn port(protocol: PortProtocol, mode: InboundMode) -> PortRule {
        PortRule {
            protocol,
            mode,
            user_tls: false,
        }
    }

    #[test]
    fn istio_filter_chain_table() {
        // (case, protocol, mode, arrival, expected)
        #[rustfmt::skip]
        let rows: Vec<(&str, PortProtocol, InboundMode, Arrival, InboundAction)> = vec![
            ("HTTP STRICT mesh", Http, Strict, MESH_HTTP, TerminateMesh(Payload::Http)),
            ("HTTP STRICT other TLS is terminated too", Http, Strict, OTHER_TLS, TerminateMesh(Payload::Http)),
            ("HTTP STRICT plaintext", Http, Strict, H1, Reset(Refusal::StrictPlaintext)),
            ("HTTP PERMISSIVE mesh", Http, Permissive, MESH_HTTP, TerminateMesh(Payload::Http)),
            ("HTTP PERMISSIVE mesh with a TCP token", Http, Permissive, MESH_TCP, TerminateMesh(Payload::Http)),
            ("HTTP PERMISSIVE plaintext", Http, Permissive, H1, Plain(Payload::Http)),
            ("HTTP PERMISSIVE other TLS", Http, Permissive, OTHER_TLS, Reset(Refusal::NonMeshTlsOnHttpPort)),
            ("HTTP DISABLE plaintext", Http, Disable, H1, Plain(Payload::Http)),
            ("HTTP DISABLE mesh TLS is read as plaintext", Http, Disable, MESH_HTTP, Plain(Payload::Http)),
            ("HTTP2 PERMISSIVE h2c", Http2, Permissive, H1, Plain(Payload::Http)),
            ("TCP STRICT other TLS", Tcp, Strict, OTHER_TLS, TerminateMesh(Payload::Tcp)),
            ("TCP STRICT mesh", Tcp, Strict, MESH_TCP, TerminateMesh(Payload::Tcp)),
            ("TCP STRICT raw", Tcp, Strict, RAW, Reset(Refusal::StrictPlaintext)),
            ("TCP PERMISSIVE mesh", Tcp, Permissive, MESH_TCP, TerminateMesh(Payload::Tcp)),
            ("TCP PERMISSIVE other TLS passes through", Tcp, Permissive, OTHER_TLS, Passthrough),
            ("TCP PERMISSIVE raw", Tcp, Permissive, RAW, Plain(Payload::Tcp)),
            ("TCP PERMISSIVE HTTP bytes stay TCP", Tcp, Permissive, H1, Plain(Payload::Tcp)),
            ("TCP DISABLE other TLS is raw", Tcp, Disable, OTHER_TLS, Plain(Payload::Tcp)),
            ("AUTO STRICT istio-http", Auto, Strict, MESH_HTTP, TerminateMesh(Payload::Http)),
            ("AUTO STRICT istio", Auto, Strict, MESH_TCP, TerminateMesh(Payload::Tcp)),
            ("AUTO STRICT other TLS", Auto, Strict, OTHER_TLS, TerminateMesh(Payload::Tcp)),
            ("AUTO STRICT plaintext", Auto, Strict, H1, Reset(Refusal::StrictPlaintext)),
            ("AUTO PERMISSIVE istio-http", Auto, Permissive, MESH_HTTP, TerminateMesh(Payload::Http)),
            ("AUTO PERMISSIVE istio", Auto, Permissive, MESH_TCP, TerminateMesh(Payload::Tcp)),
            ("AUTO PERMISSIVE sniffed HTTP", Auto, Permissive, H1, Plain(Payload::Http)),
            ("AUTO PERMISSIVE raw", Auto, Permissive, RAW, Plain(Payload::Tcp)),
            ("AUTO PERMISSIVE other TLS", Auto, Permissive, OTHER_TLS, Passthrough),
            ("AUTO DISABLE sniffed HTTP", Auto, Disable, H1, Plain(Payload::Http)),
            ("AUTO DISABLE raw", Auto, Disable, RAW, Plain(Payload::Tcp)),
            ("AUTO DISABLE TLS is raw", Auto, Disable, OTHER_TLS, Plain(Payload::Tcp)),
        ];
        for (case, protocol, mode, arrival, want) in rows {
            assert_eq!(decide(port(protocol, mode), arrival), want, "{case}");
        }
    }

    #[test]
    fn silence_past_the_detection_timeout() {
        // Server-first protocols: TCP, except under STRICT, where nothing proves mesh mTLS.
        assert_eq!(
            decide(port(Tcp, Permissive), Arrival::Silent),
            Plain(Payload::Tcp)
        );
        assert_eq!(
            decide(port(Auto, Permissive), Arrival::Silent),
            Plain(Payload::Tcp)
        );
        assert_eq!(
            decide(port(Auto, Disable), Arrival::Silent),
            Plain(Payload::Tcp)
        );
        assert_eq!(
            decide(port(Tcp, Strict), Arrival::Silent),
            Reset(Refusal::StrictSilent)
        );
    }

    #[test]
    fn a_port_with_the_users_tls_takes_only_tls() {
        let ingress = |protocol| PortRule {
            protocol,
            mode: Disable,
            user_tls: true,
        };
        assert!(ingress(Http).inspects());
        assert!(!port(Http, Disable).inspects());
        assert!(port(Auto, Disable).inspects());
        assert_eq!(
            decide(ingress(Http), OTHER_TLS),
            TerminateUser(Payload::Http)
        );
        assert_eq!(decide(ingress(Tcp), OTHER_TLS), TerminateUser(Payload::Tcp));
        assert_eq!(
            decide(ingress(Http), MESH_HTTP),
            TerminateUser(Payload::Http)
        );
        assert_eq!(decide(ingress(Http), H1), Reset(Refusal::NoTlsChain));
        assert_eq!(
            decide(ingress(Http), Arrival::Silent),
            Reset(Refusal::NoTlsChain)
        );
    }
}
