//! What the control plane and the proxies agree on: the configuration snapshot a proxy
//! runs ([`config`], serde, pushed or read from a file), the inbound decision the proxy
//! makes and `explain` predicts ([`inbound`]), the connection records both sides report
//! ([`edges`]), and the gRPC protocols between them (config push, certificate issuance)
//! with their transport over Unix sockets ([`transport`]).
//!
//! The gRPC code in `src/gen` is generated from `proto/` and checked in, so a build needs
//! neither protoc nor a proto compiler; `tests/bootstrap.rs` regenerates it with protox
//! (pure Rust) and fails when the checked-in code is stale.

pub mod authz;
pub mod config;
pub mod edges;
pub mod inbound;
pub mod transport;
pub mod urlencoded;

/// Certificate issuance: Istio's `istio.v1.auth.IstioCertificateService`.
pub mod istio_ca {
    include!("gen/istio.v1.auth.rs");
}

/// Configuration push: `tessera.v1.ConfigDiscovery`.
pub mod push {
    include!("gen/tessera.v1.rs");
}
