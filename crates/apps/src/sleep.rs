//! The `sleep` sample: a pod that only exists so users can `kubectl exec` curl in it.

use std::future::Future;

/// Does nothing until `shutdown` resolves.
pub async fn wait(shutdown: impl Future<Output = ()>) {
    shutdown.await;
}
