//! Inbound filter-chain selection (Istio's §1.5 table): from the port's declared protocol,
//! its effective mTLS mode and what the connection's first bytes are, decide what to do.
//! Pure; `inbound` acts on the answer.

use tessera_contract::config::{InboundMode, PortProtocol};

use crate::detect::Detected;

/// What the bytes after the (optional) mesh TLS are handled as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Http,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundAction {
    /// Terminate mesh mTLS (client certificate required), then handle the payload.
    TerminateMesh(Payload),
    /// Plaintext to the app: HTTP at L7 (XFCC stripped), or opaque bytes.
    Plain(Payload),
    /// The application's own TLS: bytes pass untouched.
    Passthrough,
    /// No chain matches: close the connection (Envoy's `filter_chain_not_found`).
    Reset(Refusal),
}

/// Why a connection was refused, as counted in `/stats` and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// STRICT and the client sent plaintext.
    StrictPlaintext,
    /// STRICT and the client sent nothing before the detection timeout.
    StrictSilent,
    /// PERMISSIVE HTTP port and TLS without a mesh ALPN (IN-03).
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
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::StrictPlaintext,
        Refusal::StrictSilent,
        Refusal::NonMeshTlsOnHttpPort,
        Refusal::Handshake,
        Refusal::NotHttp,
        Refusal::NoTlsChain,
        Refusal::TlsUnavailable,
        Refusal::TlsHandshake,
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
        }
    }
}

/// The decision. `detected` is `Opaque` also when the client stayed silent past the
/// detection timeout (then `silent` is true).
pub fn select(
    protocol: PortProtocol,
    mode: InboundMode,
    detected: &Detected,
    silent: bool,
) -> InboundAction {
    use InboundAction::*;
    let declared_payload = match protocol {
        PortProtocol::Http | PortProtocol::Http2 => Some(Payload::Http),
        PortProtocol::Tcp => Some(Payload::Tcp),
        PortProtocol::Auto => None,
    };
    let sniffed = match detected {
        Detected::Http1 | Detected::H2c => Payload::Http,
        _ => Payload::Tcp,
    };
    match (mode, detected) {
        // DISABLE: the TLS inspector is off; whatever comes is plaintext to us.
        (InboundMode::Disable, _) => Plain(declared_payload.unwrap_or(sniffed)),
        (InboundMode::Strict, Detected::Tls(hello)) => {
            TerminateMesh(declared_payload.unwrap_or(if hello.is_mesh_http() {
                Payload::Http
            } else {
                Payload::Tcp
            }))
        }
        (InboundMode::Strict, _) if silent => Reset(Refusal::StrictSilent),
        (InboundMode::Strict, _) => Reset(Refusal::StrictPlaintext),
        (InboundMode::Permissive, Detected::Tls(hello)) if hello.is_mesh() => {
            TerminateMesh(declared_payload.unwrap_or(if hello.is_mesh_http() {
                Payload::Http
            } else {
                Payload::Tcp
            }))
        }
        (InboundMode::Permissive, Detected::Tls(_)) => match declared_payload {
            Some(Payload::Http) => Reset(Refusal::NonMeshTlsOnHttpPort),
            _ => Passthrough,
        },
        (InboundMode::Permissive, _) => Plain(declared_payload.unwrap_or(sniffed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ClientHello;
    use InboundAction::*;
    use InboundMode::*;
    use PortProtocol::*;

    fn tls(alpn: &[&str]) -> Detected {
        Detected::Tls(ClientHello {
            sni: None,
            alpn: alpn.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn istio_filter_chain_table() {
        let mesh_http = tls(&["istio-http/1.1", "istio", "http/1.1"]);
        let mesh_tcp = tls(&["istio-peer-exchange", "istio"]);
        let app_tls = tls(&["h2", "http/1.1"]);
        let no_alpn = tls(&[]);
        let h1 = Detected::Http1;
        let h2c = Detected::H2c;
        let raw = Detected::Opaque;
        // (spec row, protocol, mode, detected, expected)
        let rows: Vec<(&str, PortProtocol, InboundMode, &Detected, InboundAction)> = vec![
            (
                "HTTP STRICT tls/any → term HTTP",
                Http,
                Strict,
                &mesh_http,
                TerminateMesh(Payload::Http),
            ),
            (
                "HTTP STRICT app TLS still terminated (IN-03 under STRICT)",
                Http,
                Strict,
                &app_tls,
                TerminateMesh(Payload::Http),
            ),
            (
                "IN-04 HTTP STRICT plaintext → reset",
                Http,
                Strict,
                &h1,
                Reset(Refusal::StrictPlaintext),
            ),
            (
                "IN-01 HTTP PERMISSIVE mesh → term HTTP",
                Http,
                Permissive,
                &mesh_http,
                TerminateMesh(Payload::Http),
            ),
            (
                "HTTP PERMISSIVE istio (tcp ALPN) → term HTTP",
                Http,
                Permissive,
                &mesh_tcp,
                TerminateMesh(Payload::Http),
            ),
            (
                "IN-02 HTTP PERMISSIVE plaintext → HTTP",
                Http,
                Permissive,
                &h1,
                Plain(Payload::Http),
            ),
            (
                "IN-03 HTTP PERMISSIVE non-mesh TLS → reset",
                Http,
                Permissive,
                &app_tls,
                Reset(Refusal::NonMeshTlsOnHttpPort),
            ),
            (
                "HTTP DISABLE plaintext",
                Http,
                Disable,
                &h1,
                Plain(Payload::Http),
            ),
            (
                "IN-08 HTTP DISABLE mesh TLS is read as plaintext (400 DPE)",
                Http,
                Disable,
                &mesh_http,
                Plain(Payload::Http),
            ),
            (
                "HTTP2 PERMISSIVE h2c",
                Http2,
                Permissive,
                &h2c,
                Plain(Payload::Http),
            ),
            (
                "TCP STRICT tls/any → term TCP",
                Tcp,
                Strict,
                &app_tls,
                TerminateMesh(Payload::Tcp),
            ),
            (
                "HTTPS-05 TCP STRICT mesh → term TCP",
                Tcp,
                Strict,
                &mesh_tcp,
                TerminateMesh(Payload::Tcp),
            ),
            (
                "TCP STRICT raw → reset",
                Tcp,
                Strict,
                &raw,
                Reset(Refusal::StrictPlaintext),
            ),
            (
                "TCP PERMISSIVE mesh → term TCP",
                Tcp,
                Permissive,
                &mesh_tcp,
                TerminateMesh(Payload::Tcp),
            ),
            (
                "IN-05 TCP PERMISSIVE app TLS → passthrough",
                Tcp,
                Permissive,
                &app_tls,
                Passthrough,
            ),
            (
                "TCP PERMISSIVE TLS without ALPN → passthrough",
                Tcp,
                Permissive,
                &no_alpn,
                Passthrough,
            ),
            (
                "TCP PERMISSIVE raw → TCP",
                Tcp,
                Permissive,
                &raw,
                Plain(Payload::Tcp),
            ),
            (
                "TCP PERMISSIVE HTTP bytes stay TCP",
                Tcp,
                Permissive,
                &h1,
                Plain(Payload::Tcp),
            ),
            (
                "TCP DISABLE app TLS → raw TCP",
                Tcp,
                Disable,
                &app_tls,
                Plain(Payload::Tcp),
            ),
            (
                "AUTO STRICT istio-http → term HTTP",
                Auto,
                Strict,
                &mesh_http,
                TerminateMesh(Payload::Http),
            ),
            (
                "AUTO STRICT other TLS → term TCP",
                Auto,
                Strict,
                &mesh_tcp,
                TerminateMesh(Payload::Tcp),
            ),
            (
                "AUTO STRICT app TLS → term TCP",
                Auto,
                Strict,
                &app_tls,
                TerminateMesh(Payload::Tcp),
            ),
            (
                "IN-09 AUTO STRICT plaintext → reset",
                Auto,
                Strict,
                &h1,
                Reset(Refusal::StrictPlaintext),
            ),
            (
                "AUTO PERMISSIVE istio-http → term HTTP",
                Auto,
                Permissive,
                &mesh_http,
                TerminateMesh(Payload::Http),
            ),
            (
                "AUTO PERMISSIVE istio → term TCP",
                Auto,
                Permissive,
                &mesh_tcp,
                TerminateMesh(Payload::Tcp),
            ),
            (
                "AUTO PERMISSIVE sniffed http/1.1 → HTTP",
                Auto,
                Permissive,
                &h1,
                Plain(Payload::Http),
            ),
            (
                "AUTO PERMISSIVE sniffed h2c → HTTP",
                Auto,
                Permissive,
                &h2c,
                Plain(Payload::Http),
            ),
            (
                "AUTO PERMISSIVE raw → TCP",
                Auto,
                Permissive,
                &raw,
                Plain(Payload::Tcp),
            ),
            (
                "AUTO PERMISSIVE other TLS → passthrough",
                Auto,
                Permissive,
                &app_tls,
                Passthrough,
            ),
            (
                "AUTO DISABLE sniffed HTTP",
                Auto,
                Disable,
                &h1,
                Plain(Payload::Http),
            ),
            ("AUTO DISABLE raw", Auto, Disable, &raw, Plain(Payload::Tcp)),
            (
                "AUTO DISABLE TLS is raw",
                Auto,
                Disable,
                &app_tls,
                Plain(Payload::Tcp),
            ),
        ];
        for (name, protocol, mode, detected, want) in rows {
            assert_eq!(select(protocol, mode, detected, false), want, "{name}");
        }
    }

    #[test]
    fn silence_past_the_detection_timeout() {
        // Server-first protocols: not a hang (Istio's protocolDetectionTimeout 0s) but TCP,
        // except under STRICT, where nothing proves mesh mTLS.
        assert_eq!(
            select(Tcp, Permissive, &Detected::Opaque, true),
            Plain(Payload::Tcp)
        );
        assert_eq!(
            select(Auto, Permissive, &Detected::Opaque, true),
            Plain(Payload::Tcp)
        );
        assert_eq!(
            select(Auto, Disable, &Detected::Opaque, true),
            Plain(Payload::Tcp)
        );
        assert_eq!(
            select(Tcp, Strict, &Detected::Opaque, true),
            Reset(Refusal::StrictSilent)
        );
    }
}
