//! What a proxy reports: counters for `/stats/prometheus` ([`stats`]), the connections it
//! has seen per peer ([`edges`], admin `/edges`), and the access log ([`access_log`]).

pub mod access_log;
pub mod edges;
pub mod stats;

pub use stats::{Direction, Stats, TlsUsed};
