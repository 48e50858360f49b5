//! The Kubernetes REST API of the control plane, for the machine's own `kubectl` and the
//! ecosystem's clients: discovery generated from the model's kinds, objects and Tables
//! from the store, over HTTPS with the cluster's own CA and an administrator's
//! credentials written to a kubeconfig.

pub mod answer;
pub mod discovery;
pub mod openapi;
pub mod path;
pub mod protobuf;
mod server;
pub mod watch;
pub mod write;

pub use server::{authorize, serve, tls_config, Caller, Denied};
