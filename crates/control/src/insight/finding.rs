//! What `tessera analyze` reports: a finding with its level, a stable code, the resource
//! and a fix.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// Stable codes; the text after the code says the same in words.
pub mod code {
    /// A PeerAuthentication or Policy (or part of one) that never applies.
    pub const POLICY_IGNORED: &str = "TSR0101";
    /// A DestinationRule sends mTLS to a port that takes plaintext only.
    pub const MTLS_TO_PLAINTEXT: &str = "TSR0102";
    /// A DestinationRule sends plaintext (or user TLS) to a STRICT port.
    pub const PLAINTEXT_TO_STRICT: &str = "TSR0103";
    /// A Sidecar ingress listener's tls does not take effect.
    pub const INGRESS_TLS_IGNORED: &str = "TSR0104";
    /// A Gateway server that is not served.
    pub const GATEWAY_SERVER_SKIPPED: &str = "TSR0105";
    /// A DestinationRule originates the user's TLS toward a port whose app does not
    /// terminate it (or whose sidecar refuses it).
    pub const USER_TLS_NOT_TERMINATED: &str = "TSR0106";
    /// A VirtualService route (or one of its matches) that is never used: a route before
    /// it matches every request, or has the same matches.
    pub const SHADOWED_ROUTE: &str = "TSR0107";
    /// An AuthorizationPolicy that applies to no proxied workload.
    pub const AUTHZ_SELECTS_NOTHING: &str = "TSR0201";
    /// An AuthorizationPolicy names a principal or namespace no workload has.
    pub const AUTHZ_UNKNOWN_IDENTITY: &str = "TSR0202";
    /// HTTP-only fields in an AuthorizationPolicy whose ports are all TCP.
    pub const AUTHZ_HTTP_ON_TCP: &str = "TSR0203";
    /// An ALLOW policy that a DENY-everything policy shadows.
    pub const AUTHZ_SHADOWED: &str = "TSR0204";
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    pub level: Level,
    pub code: String,
    /// `Kind namespace/name`.
    pub resource: String,
    pub message: String,
    pub fix: String,
}
