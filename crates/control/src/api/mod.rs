//! The operator API: JSON over HTTP/1.1 on `<state dir>/api.sock`, what the CLI talks
//! to. The messages are in [`types`], the client in [`client`]; the server side routes
//! each request to its verb group ([`routes`]).

pub mod client;
pub mod columns;
mod insight;
mod objects;
mod proxies;
pub(crate) mod routes;
pub mod types;
pub mod wait;

pub(crate) use routes::handle;
pub use types::*;
