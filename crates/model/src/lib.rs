//! Tessera's resource model: Istio and Kubernetes kinds, YAML loading with positions,
//! validation that reports every problem with `file:line:column` and a field path, and
//! label selectors.

pub mod de;
pub mod duration;
pub mod istio;
pub mod kube;
pub mod load;
pub mod meta;
pub mod names;
pub mod problem;
pub mod quote;
pub mod resource;
pub mod schema;
pub mod validate;
pub mod yaml;

pub use load::{load_paths, load_str, LoadOptions, LoadReport, Loaded};
pub use problem::{FieldPath, Problem, Severity};
pub use resource::{Kind, ObjectKey, Resource};
