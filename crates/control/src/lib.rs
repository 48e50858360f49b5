//! Tessera's control plane (istiod's job): the persisted store of applied resources, the
//! registry read from it, the pure policy compiler, config push to proxies with ACK/NACK,
//! the CA service and the operator API the CLI talks to.

pub mod admission;
pub mod api;
pub mod compile;
pub mod inject;
pub mod insight;
pub mod kube;
pub mod mirror;
pub mod objects;
pub mod outbound_cache;
pub mod policy;
pub mod push;
pub mod registry;
pub mod server;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tls_accept;
pub mod webhook;
pub mod world;

pub use compile::{compile, CompileError};
pub use objects::{ObjectKey, Objects, Op, Outcome};
pub use server::{run, run_with, ControlError, ControlOptions, ControlPlane};
pub use state::{Admission, ControlState};
pub use world::World;
