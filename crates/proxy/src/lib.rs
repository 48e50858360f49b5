//! Tessera's sidecar and gateway proxy. It runs one immutable [`Snapshot`] at a time
//! (swapped whole on update), decides nothing the snapshot did not precompute, and is laid
//! out by stage of the traffic path:
//!
//! - [`listeners`]: captured outbound (15001) and inbound (15006) listeners, which recover
//!   the original destination with SO_ORIGINAL_DST, explicit listeners bound to one target,
//!   and gateway listeners;
//! - [`detect`]: what the first bytes of a connection are (TLS ClientHello, HTTP/1, h2c);
//! - [`inbound`]: the inbound decision (port protocol × mode × what arrives), mesh mTLS
//!   termination with XFCC, app-TLS passthrough, STRICT resets, Sidecar ingress TLS;
//! - [`outbound`]: per-endpoint TLS (mesh mTLS, DR SIMPLE/MUTUAL, plaintext), round robin,
//!   503s that name the hop, phase and reason; [`connect`] and [`pool`] open and keep the
//!   upstream connections both sides use;
//! - [`gateway`]: Gateway servers, SNI filter chains, VirtualService routing;
//! - [`server`]: one downstream HTTP connection served the same way on every side, under
//!   the [`limits`] (connections per listener, header, idle and stream timeouts, HTTP/2
//!   stream and reset budgets), each hit counted and logged once per kind;
//! - [`config`]: the snapshot's lookup tables and ready TLS configs; [`telemetry`]: stats,
//!   edges and the access log; [`admin`]: the admin endpoint; [`push`]: pushed mode.

pub mod admin;
pub mod authz;
pub mod config;
pub mod connect;
pub mod detect;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod io;
pub mod limits;
pub mod listeners;
pub mod outbound;
pub mod pool;
pub mod proxy;
pub mod push;
pub mod server;
pub mod shared;
pub mod telemetry;

pub use config::{read_config, ConfigError, Snapshot};
pub use proxy::{run_from_file, start, ProxyError, ProxyHandle};
pub use shared::Shared;
