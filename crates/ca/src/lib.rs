//! Tessera's certificate authority: a root (self-signed or plugged in) kept in the state
//! dir, workload certificates that carry only a SPIFFE identity, bootstrap tokens, issuance
//! over gRPC, the proxy's client (fetch and renew) and the rustls glue for mesh mTLS.

pub mod authority;
pub mod client;
pub mod cluster;
pub mod credentials;
pub mod crypto;
pub mod external;
pub mod inspect;
pub mod issuance;
pub mod service;
pub mod spiffe;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod token;
pub mod token_review;
pub mod verify;

pub use authority::{Authority, CaError, IssuedChain, KeyAlgorithm};
pub use credentials::{CredentialStore, Credentials};
pub use spiffe::{SpiffeError, SpiffeId};
