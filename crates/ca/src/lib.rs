//! Tessera's certificate authority: a root (self-signed or plugged in) kept in the state
//! dir, workload certificates that carry only a SPIFFE identity, and the SPIFFE id type.

pub mod authority;
pub mod inspect;
pub mod spiffe;
pub mod verify;

pub use authority::{Authority, CaError, IssuedChain, KeyAlgorithm};
pub use spiffe::{SpiffeError, SpiffeId};
