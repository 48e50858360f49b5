//! `.../pods/{name}/attach` upgraded to a WebSocket (`v5.channel.k8s.io`), as `kubectl
//! attach` opens it: the container's output from now on, on the stdout channel, until the
//! container stops running or the client leaves. The local runtime keeps no container's
//! stdin open and gives containers no terminal, so `-i` and `-t` are refused.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tessera_model::{Kind, Resource};

use super::answer;
use super::exec::{bad, exit_status, flag, switching, websocket_key};
use super::logs::follow;
use super::path::ObjectPath;
use super::respond::{error, param, Reply};
use super::websocket::{self as ws, Message};
use super::PodRuntime;
use crate::objects::ObjectKey;
use crate::state::ControlState;

/// How often the container is checked to be still running.
const RUNNING_EVERY: Duration = Duration::from_millis(500);

pub fn serve(
    control: &Arc<ControlState>,
    pods: Option<&dyn PodRuntime>,
    mut req: Request<Incoming>,
    o: &ObjectPath,
) -> Reply {
    let (Some(name), Some(namespace)) = (&o.name, &o.namespace) else {
        return bad("attach needs a pod");
    };
    let pod = ObjectKey::new(Kind::Pod, namespace, name);
    if control.objects().get(&pod).is_none() {
        return error(answer::not_found(o.info, name));
    }
    // Checked before the protocol: kubectl retries a refused WebSocket with SPDY, and
    // the reason must be the same both times.
    if flag(&req, "stdin") || flag(&req, "tty") {
        return bad("the local runtime keeps no container's stdin open and gives containers no terminal: attach without -i and -t (or exec -it a shell)");
    }
    let key = match websocket_key(&req, "attach") {
        Ok(k) => k,
        Err(why) => return bad(&why),
    };
    let Some(pods) = pods else {
        return bad("this control plane runs no pods");
    };
    let container = param(&req, "container");
    let path = match pods.log_path(namespace, name, container.as_deref()) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let at = std::fs::metadata(&path).map_or(0, |m| m.len());
    let upgrade = hyper::upgrade::on(&mut req);
    let control = control.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let (mut from_client, to_client) = tokio::io::split(TokioIo::new(upgraded));
        let to_client = tokio::sync::Mutex::new(to_client);
        // Ends when the client closes the socket, or when the container stops.
        let client_left = async move {
            while let Ok(m) = ws::read_message(&mut from_client).await {
                if m == Message::Close {
                    return;
                }
            }
        };
        let stopped = async {
            while running(&control, &pod, container.as_deref()) {
                tokio::time::sleep(RUNNING_EVERY).await;
            }
        };
        let gone = async {
            tokio::select! {
                () = client_left => {}
                () = stopped => {}
            }
        };
        let to_client = &to_client;
        follow(
            path,
            at,
            |added| async move {
                let frame = ws::channel_message(ws::STDOUT, &added);
                ws::write_all(&mut *to_client.lock().await, &frame)
                    .await
                    .is_ok()
            },
            gone,
        )
        .await;
        let mut socket = to_client.lock().await;
        let status = exit_status(0).to_string();
        let _ = ws::write_all(
            &mut *socket,
            &ws::channel_message(ws::STATUS, status.as_bytes()),
        )
        .await;
        let _ = ws::write_all(&mut *socket, &ws::frame(0x8, &1000u16.to_be_bytes())).await;
    });
    switching(&key)
}

/// Whether the pod is there with `container` (its first one when `None`) running.
fn running(control: &ControlState, pod: &ObjectKey, container: Option<&str>) -> bool {
    let objects = control.objects();
    let Some(Resource::Pod(p)) = objects.get(pod).map(|s| &s.resource) else {
        return false;
    };
    let Some(name) = container.or(p.spec.containers.first().map(|c| c.name.as_str())) else {
        return false;
    };
    p.status.as_ref().is_some_and(|s| {
        s.container_statuses
            .iter()
            .any(|c| c.name == name && c.state.as_ref().is_some_and(|st| st.running.is_some()))
    })
}
