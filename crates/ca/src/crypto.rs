//! The one crypto provider of the mesh (aws-lc-rs): what rustls configs are built with and
//! what certificate chains are verified with.

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};

/// The one crypto provider of the mesh.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The signature algorithms the mesh verifies with. Taken from the provider once: building
/// a provider allocates, and verification runs on every handshake.
pub fn algorithms() -> WebPkiSupportedAlgorithms {
    static ALGORITHMS: std::sync::OnceLock<WebPkiSupportedAlgorithms> = std::sync::OnceLock::new();
    *ALGORITHMS.get_or_init(|| {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
    })
}
