//! The outcome of one client → endpoint hop from what each side does with TLS: what the
//! client (or its sidecar) sends, and what the server's sidecar does with it, decided by
//! the same function the proxy runs on every inbound connection. Pure.

use std::fmt;

use serde::{Deserialize, Serialize};
use tessera_contract::config::InboundMode;
use tessera_contract::inbound::{self, Arrival, InboundAction, Payload, PortRule, Refusal};

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Mesh mTLS: the server sees the client's SPIFFE identity.
    Mtls,
    /// Plaintext end to end (accepted).
    Plaintext,
    /// TLS with the user's certificates (DestinationRule SIMPLE/MUTUAL): it works when the
    /// far end terminates it.
    Tls,
    /// The connection is reset (curl exit 56): no sidecar on the client to answer.
    Refused,
    /// The client's sidecar answers 503: the hop to the endpoint failed.
    Unavailable,
    /// The server's sidecar answers 403 `RBAC: access denied`: an AuthorizationPolicy.
    Denied,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Mtls,
        Verdict::Plaintext,
        Verdict::Tls,
        Verdict::Refused,
        Verdict::Unavailable,
        Verdict::Denied,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Mtls => "mTLS",
            Verdict::Plaintext => "plaintext",
            Verdict::Tls => "TLS",
            Verdict::Refused => "refused",
            Verdict::Unavailable => "503",
            Verdict::Denied => "403",
        }
    }

    /// Requests get an answer from the server's app.
    pub fn works(self) -> bool {
        matches!(self, Verdict::Mtls | Verdict::Plaintext | Verdict::Tls)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What leaves the client toward one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSends {
    /// No sidecar: the app's own bytes (plaintext for the requests this models).
    AppPlaintext,
    /// A sidecar sending plaintext (auto mTLS chose it, or a DestinationRule DISABLE).
    Plaintext,
    /// A sidecar sending mesh mTLS (ISTIO_MUTUAL).
    MeshMtls,
    /// A sidecar originating TLS with the user's settings (SIMPLE / MUTUAL).
    UserTls,
}

impl ClientSends {
    pub fn has_sidecar(self) -> bool {
        self != ClientSends::AppPlaintext
    }

    pub fn label(self) -> &'static str {
        match self {
            ClientSends::AppPlaintext => "plaintext (no sidecar: the app's own bytes)",
            ClientSends::Plaintext => "plaintext",
            ClientSends::MeshMtls => "mTLS (ISTIO_MUTUAL)",
            ClientSends::UserTls => "TLS with the user's certificates",
        }
    }
}

/// What the endpoint's port takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerTakes {
    /// No sidecar: the app reads whatever arrives.
    NoSidecar,
    Strict,
    Permissive,
    Disable,
    /// A Sidecar ingress listener terminating TLS with the user's certificate.
    UserTls,
}

impl ServerTakes {
    pub fn label(self) -> &'static str {
        match self {
            ServerTakes::NoSidecar => "plaintext only (no sidecar: the app reads the bytes)",
            ServerTakes::Strict => "mTLS only (STRICT)",
            ServerTakes::Permissive => "mTLS or plaintext (PERMISSIVE)",
            ServerTakes::Disable => "plaintext only (DISABLE)",
            ServerTakes::UserTls => "TLS with the user's certificate only (Sidecar ingress tls)",
        }
    }
}

/// One client → endpoint hop, as both sides are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub client: ClientSends,
    /// The client's sidecar handles the port as HTTP, so a failed hop is its 503 rather
    /// than a reset; its mesh ALPN then says HTTP.
    pub client_http: bool,
    /// The endpoint's port as its sidecar's configuration has it; `None` without a
    /// sidecar (the app reads the bytes itself).
    pub server: Option<PortRule>,
    /// The Service declares the port `https` or `tls`: the app terminates TLS itself.
    pub app_tls: bool,
}

impl Hop {
    /// What reaches the server's sidecar. The hops this models carry HTTP requests.
    fn arrival(&self) -> Arrival {
        match self.client {
            ClientSends::AppPlaintext | ClientSends::Plaintext => Arrival::Plaintext { http: true },
            ClientSends::MeshMtls => Arrival::Tls {
                mesh: true,
                http: self.client_http,
            },
            ClientSends::UserTls => Arrival::Tls {
                mesh: false,
                http: false,
            },
        }
    }

    fn failed(&self) -> Verdict {
        if self.client.has_sidecar() && self.client_http {
            Verdict::Unavailable
        } else {
            Verdict::Refused
        }
    }
}

/// The verdict, and why in one sentence. The server's side is the inbound decision the
/// proxy itself makes ([`tessera_contract::inbound::decide`]); this adds what the client
/// sends and what the app behind the port reads.
pub fn decide(hop: &Hop) -> (Verdict, &'static str) {
    use ClientSends as C;
    let failed = hop.failed();
    let Some(port) = hop.server else {
        return match hop.client {
            C::AppPlaintext | C::Plaintext => (
                Verdict::Plaintext,
                "plaintext to an endpoint without a sidecar",
            ),
            C::MeshMtls => (
                failed,
                "the client's sidecar sends mTLS to an endpoint without a sidecar: the app gets TLS bytes",
            ),
            C::UserTls => app_reads_tls(
                hop,
                "the client's sidecar originates TLS to an endpoint without a sidecar, and its app terminates it (the Service declares the port https or tls)",
                "the client's sidecar originates TLS to an endpoint without a sidecar whose app speaks plaintext (the Service does not declare the port https or tls)",
            ),
        };
    };
    match (inbound::decide(port, hop.arrival()), hop.client) {
        (InboundAction::Reset(Refusal::StrictPlaintext), C::AppPlaintext) => (
            failed,
            "the port is STRICT and the client has no sidecar to send mTLS",
        ),
        (InboundAction::Reset(Refusal::StrictPlaintext), _) => (
            failed,
            "the port is STRICT and the client's sidecar sends plaintext",
        ),
        (InboundAction::Reset(Refusal::NoTlsChain), _) => (
            failed,
            "the port takes only TLS with the user's certificate and the client sends plaintext",
        ),
        (InboundAction::Reset(refusal), _) => (failed, refusal.explain()),
        (InboundAction::TerminateMesh(_), C::MeshMtls) => (Verdict::Mtls, "mesh mTLS on both sides"),
        (InboundAction::TerminateMesh(_), _) => (
            failed,
            "the port is STRICT: it takes only a mesh certificate, the client presents the user's (or none)",
        ),
        (InboundAction::TerminateUser(_), C::UserTls) => (
            Verdict::Tls,
            "TLS with the user's certificates, terminated by the port's Sidecar ingress listener",
        ),
        (InboundAction::TerminateUser(_), _) => (
            failed,
            "the port serves the user's certificate, not a mesh identity: the client's sidecar cannot verify it",
        ),
        (InboundAction::Plain(_), C::AppPlaintext | C::Plaintext) => {
            if port.mode == InboundMode::Disable {
                (Verdict::Plaintext, "DISABLE takes plaintext only")
            } else {
                (Verdict::Plaintext, "PERMISSIVE takes plaintext")
            }
        }
        (InboundAction::Plain(_), C::MeshMtls) => (
            failed,
            "the client's sidecar sends mTLS to a port that takes plaintext only: the app gets TLS bytes (400 DPE)",
        ),
        (InboundAction::Plain(Payload::Http), C::UserTls) => (
            failed,
            "the port takes plaintext only (DISABLE) and is declared HTTP: the client's TLS reaches its HTTP parser (400 DPE)",
        ),
        (InboundAction::Plain(Payload::Tcp), C::UserTls) => app_reads_tls(
            hop,
            "the port takes plaintext only (DISABLE): the client's TLS goes on to the app, which terminates it (the Service declares the port https or tls)",
            "the port takes plaintext only (DISABLE): the client's TLS goes on to an app that speaks plaintext (the Service does not declare the port https or tls)",
        ),
        (InboundAction::Passthrough, _) => app_reads_tls(
            hop,
            "TLS without a mesh ALPN passes through the port to the app, which terminates it (the Service declares the port https or tls)",
            "TLS without a mesh ALPN passes through the port to an app that speaks plaintext (the Service does not declare the port https or tls): non-mesh TLS toward a plaintext app fails",
        ),
    }
}

/// The client's own TLS reached the app: it works only when the app terminates TLS.
fn app_reads_tls(hop: &Hop, works: &'static str, fails: &'static str) -> (Verdict, &'static str) {
    if hop.app_tls {
        (Verdict::Tls, works)
    } else {
        (hop.failed(), fails)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_contract::config::PortProtocol;
    use ClientSends as C;
    use Verdict::*;

    fn port(protocol: PortProtocol, mode: InboundMode) -> Option<PortRule> {
        Some(PortRule {
            protocol,
            mode,
            user_tls: false,
        })
    }

    #[test]
    fn verdicts_of_client_and_server_configurations() {
        use InboundMode::*;
        use PortProtocol::{Http, Tcp};
        let none = None;
        let ingress = Some(PortRule {
            protocol: Http,
            mode: Disable,
            user_tls: true,
        });
        // (case, client sends, client handles HTTP, server port, app speaks TLS, verdict)
        #[rustfmt::skip]
        let table = [
            ("mesh client → PERMISSIVE", C::MeshMtls, true, port(Http, Permissive), false, Mtls),
            ("mesh client → no sidecar (auto mTLS chose plaintext)", C::Plaintext, true, none, false, Plaintext),
            ("no sidecar → PERMISSIVE", C::AppPlaintext, true, port(Http, Permissive), false, Plaintext),
            ("no sidecar → STRICT", C::AppPlaintext, true, port(Http, Strict), false, Refused),
            ("mesh client → STRICT", C::MeshMtls, true, port(Http, Strict), false, Mtls),
            ("mesh client → DISABLE (auto mTLS chose plaintext)", C::Plaintext, true, port(Http, Disable), false, Plaintext),
            ("DR ISTIO_MUTUAL → DISABLE", C::MeshMtls, true, port(Http, Disable), false, Unavailable),
            ("no sidecar → DISABLE", C::AppPlaintext, true, port(Http, Disable), false, Plaintext),
            ("DR DISABLE → STRICT", C::Plaintext, true, port(Http, Strict), false, Unavailable),
            ("DR SIMPLE → STRICT HTTP port", C::UserTls, true, port(Http, Strict), false, Unavailable),
            ("no sidecar → STRICT TCP port", C::AppPlaintext, false, port(Tcp, Strict), false, Refused),
            ("DR DISABLE → STRICT TCP port", C::Plaintext, false, port(Tcp, Strict), false, Refused),
            ("DR ISTIO_MUTUAL → no sidecar", C::MeshMtls, true, none, false, Unavailable),
            ("in-mesh plaintext → Sidecar ingress tls", C::Plaintext, true, ingress, false, Unavailable),
            ("user TLS → Sidecar ingress tls", C::UserTls, true, ingress, false, Tls),
            ("mesh client → Sidecar ingress tls", C::MeshMtls, true, ingress, false, Unavailable),
            // Non-mesh TLS toward a port whose app speaks plaintext fails, as in the data path.
            ("DR SIMPLE → PERMISSIVE HTTP port", C::UserTls, true, port(Http, Permissive), false, Unavailable),
            ("DR SIMPLE → PERMISSIVE TCP port, plaintext app", C::UserTls, false, port(Tcp, Permissive), false, Refused),
            ("DR SIMPLE → PERMISSIVE TCP port, app declared https", C::UserTls, false, port(Tcp, Permissive), true, Tls),
            ("DR SIMPLE → STRICT TCP port", C::UserTls, false, port(Tcp, Strict), false, Refused),
            ("DR SIMPLE → DISABLE HTTP port", C::UserTls, true, port(Http, Disable), false, Unavailable),
            ("DR SIMPLE → DISABLE TCP port, app declared tls", C::UserTls, false, port(Tcp, Disable), true, Tls),
            ("DR SIMPLE → no sidecar, plaintext app", C::UserTls, true, none, false, Unavailable),
            ("DR SIMPLE → no sidecar, app declared https", C::UserTls, false, none, true, Tls),
            // MUTUAL presents the user's client certificate; toward sidecars it fares as SIMPLE.
            ("DR MUTUAL → PERMISSIVE HTTP port", C::UserTls, true, port(Http, Permissive), false, Unavailable),
            ("DR MUTUAL → STRICT HTTP port", C::UserTls, true, port(Http, Strict), false, Unavailable),
            ("DR MUTUAL → Sidecar ingress tls", C::UserTls, true, ingress, false, Tls),
        ];
        for (case, client, client_http, server, app_tls, want) in table {
            let hop = Hop {
                client,
                client_http,
                server,
                app_tls,
            };
            assert_eq!(decide(&hop).0, want, "{case}");
        }
    }

    #[test]
    fn a_refused_hop_says_what_the_server_sidecar_says() {
        let hop = Hop {
            client: C::UserTls,
            client_http: true,
            server: port(PortProtocol::Http, InboundMode::Permissive),
            app_tls: false,
        };
        assert_eq!(
            decide(&hop),
            (Unavailable, Refusal::NonMeshTlsOnHttpPort.explain())
        );
    }

    #[test]
    fn only_answered_verdicts_work() {
        let working: Vec<Verdict> = Verdict::ALL.into_iter().filter(|v| v.works()).collect();
        assert_eq!(working, [Mtls, Plaintext, Tls]);
    }
}
