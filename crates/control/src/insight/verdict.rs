//! The outcome of one client → endpoint hop from what each side does with TLS: what the
//! client (or its sidecar) sends, what the server's port takes. Pure; the table in the
//! tests is spec §2.3 (AMTLS-*) and §1.2 (IN-*).

use std::fmt;

use serde::{Deserialize, Serialize};

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
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Verdict::Mtls,
        Verdict::Plaintext,
        Verdict::Tls,
        Verdict::Refused,
        Verdict::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Mtls => "mTLS",
            Verdict::Plaintext => "plaintext",
            Verdict::Tls => "TLS",
            Verdict::Refused => "refused",
            Verdict::Unavailable => "503",
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

/// The verdict, and why in one sentence. `http`: the client's sidecar handles the port
/// as HTTP, so a failed hop is its 503 rather than a reset.
pub fn decide(client: ClientSends, server: ServerTakes, http: bool) -> (Verdict, &'static str) {
    use ClientSends as C;
    use ServerTakes as S;
    let failed = if client.has_sidecar() && http {
        Verdict::Unavailable
    } else {
        Verdict::Refused
    };
    match (client, server) {
        (C::AppPlaintext | C::Plaintext, S::NoSidecar) => (
            Verdict::Plaintext,
            "plaintext to an endpoint without a sidecar",
        ),
        (C::AppPlaintext | C::Plaintext, S::Permissive) => {
            (Verdict::Plaintext, "PERMISSIVE takes plaintext")
        }
        (C::AppPlaintext | C::Plaintext, S::Disable) => {
            (Verdict::Plaintext, "DISABLE takes plaintext only")
        }
        (C::AppPlaintext, S::Strict) => (
            failed,
            "the port is STRICT and the client has no sidecar to send mTLS",
        ),
        (C::Plaintext, S::Strict) => (
            failed,
            "the port is STRICT and the client's sidecar sends plaintext",
        ),
        (C::AppPlaintext | C::Plaintext, S::UserTls) => (
            failed,
            "the port takes only TLS with the user's certificate and the client sends plaintext",
        ),
        (C::MeshMtls, S::Strict | S::Permissive) => (Verdict::Mtls, "mesh mTLS on both sides"),
        (C::MeshMtls, S::Disable) => (
            failed,
            "the client's sidecar sends mTLS to a port that takes plaintext only: the app gets TLS bytes (400 DPE)",
        ),
        (C::MeshMtls, S::NoSidecar) => (
            failed,
            "the client's sidecar sends mTLS to an endpoint without a sidecar: the app gets TLS bytes",
        ),
        (C::MeshMtls, S::UserTls) => (
            failed,
            "the port serves the user's certificate, not a mesh identity: the client's sidecar cannot verify it",
        ),
        (C::UserTls, S::Strict) => (
            failed,
            "the port is STRICT: it takes only a mesh certificate, the client presents the user's (or none)",
        ),
        (C::UserTls, S::Permissive | S::Disable | S::NoSidecar | S::UserTls) => (
            Verdict::Tls,
            "TLS with the user's certificates: it works when the far end terminates that TLS",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientSends as C;
    use ServerTakes as S;
    use Verdict::*;

    #[test]
    fn verdicts_follow_the_spec_rows() {
        // (row, client, server, http port, verdict)
        let table = [
            (
                "AMTLS-01 full -> full PERMISSIVE",
                C::MeshMtls,
                S::Permissive,
                true,
                Mtls,
            ),
            (
                "AMTLS-03 full -> legacy",
                C::Plaintext,
                S::NoSidecar,
                true,
                Plaintext,
            ),
            (
                "AMTLS-04 legacy -> full",
                C::AppPlaintext,
                S::Permissive,
                true,
                Plaintext,
            ),
            (
                "AMTLS-05 legacy -> STRICT",
                C::AppPlaintext,
                S::Strict,
                true,
                Refused,
            ),
            (
                "AMTLS-06 full -> STRICT",
                C::MeshMtls,
                S::Strict,
                true,
                Mtls,
            ),
            (
                "AMTLS-08 full -> DISABLE",
                C::Plaintext,
                S::Disable,
                true,
                Plaintext,
            ),
            (
                "AMTLS-09 DR ISTIO_MUTUAL -> DISABLE",
                C::MeshMtls,
                S::Disable,
                true,
                Unavailable,
            ),
            (
                "AMTLS-10 legacy -> DISABLE",
                C::AppPlaintext,
                S::Disable,
                true,
                Plaintext,
            ),
            (
                "AMTLS-11 DR DISABLE -> STRICT",
                C::Plaintext,
                S::Strict,
                true,
                Unavailable,
            ),
            (
                "AMTLS-20 DR SIMPLE -> STRICT",
                C::UserTls,
                S::Strict,
                true,
                Unavailable,
            ),
            (
                "AMTLS-30 no sidecar -> STRICT tcp",
                C::AppPlaintext,
                S::Strict,
                false,
                Refused,
            ),
            (
                "IN-07 DR DISABLE -> STRICT tcp",
                C::Plaintext,
                S::Strict,
                false,
                Refused,
            ),
            (
                "mTLS to a pod without a sidecar",
                C::MeshMtls,
                S::NoSidecar,
                true,
                Unavailable,
            ),
            (
                "SCI-10 in-mesh plaintext to ingress tls",
                C::Plaintext,
                S::UserTls,
                true,
                Unavailable,
            ),
            (
                "SCI external TLS to ingress tls",
                C::UserTls,
                S::UserTls,
                true,
                Tls,
            ),
        ];
        for (row, client, server, http, want) in table {
            assert_eq!(decide(client, server, http).0, want, "{row}");
        }
    }

    #[test]
    fn only_answered_verdicts_work() {
        let working: Vec<Verdict> = Verdict::ALL.into_iter().filter(|v| v.works()).collect();
        assert_eq!(working, [Mtls, Plaintext, Tls]);
    }
}
