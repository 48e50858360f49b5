//! Tessera's gRPC protocols. The Rust code in `src/gen` is generated from `proto/` and
//! checked in, so a build needs neither protoc nor a proto compiler; `tests/bootstrap.rs`
//! regenerates it with protox (pure Rust) and fails when the checked-in code is stale.

pub mod config;
pub mod edges;

/// Certificate issuance: Istio's `istio.v1.auth.IstioCertificateService`.
pub mod istio_ca {
    include!("gen/istio.v1.auth.rs");
}

/// Configuration push: `tessera.v1.ConfigDiscovery`.
pub mod push {
    include!("gen/tessera.v1.rs");
}
