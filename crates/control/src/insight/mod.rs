//! Operator insight, answered by the compiler that feeds the proxies (so it cannot
//! disagree with the data path): per-hop verdicts ([`verdict`]), `explain` and the
//! reachability matrix ([`reach`]), `analyze --what-if` ([`whatif`]), `analyze`
//! ([`analyze`], with [`shadow`] for VirtualService routes that are never used), and the join of the proxies' observed connections ([`edges`]).

pub mod analyze;
mod authz;
pub mod edges;
pub mod finding;
pub mod reach;
pub mod shadow;
pub mod verdict;
pub mod whatif;

pub use analyze::{analyze, Finding, Level};
pub use edges::{join, Edge};
pub use reach::{explain, find_client, find_service, matrix, EndpointReach, PortReach, ReachError};
pub use verdict::{decide, ClientSends, ServerTakes, Verdict};
pub use whatif::{plan_change, what_if, Change, PlannedChange, WhatIf};
