//! `GET .../pods/{name}/exec` upgraded to a WebSocket (`v5.channel.k8s.io`), as
//! `kubectl exec` (and `kubectl cp`, through `tar`) opens it: the command runs in the
//! container; its stdout and stderr come back on channels 1 and 2, stdin goes in on
//! channel 0, and the exit status is a `Status` on channel 3. No TTY yet.

use std::process::Stdio;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::answer;
use super::path::ObjectPath;
use super::respond::{error, params, Reply};
use super::websocket::{self as ws, Message};
use super::PodRuntime;
use crate::state::ControlState;

fn bad(message: &str) -> Reply {
    error(answer::status(400, "BadRequest", message, None))
}

fn flag(req: &Request<Incoming>, name: &str) -> bool {
    params(req, name).iter().any(|v| v == "true" || v == "1")
}

/// The exit status as the API server reports it on the status channel.
pub fn exit_status(code: i32) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

pub fn serve(
    control: &ControlState,
    pods: Option<&dyn PodRuntime>,
    mut req: Request<Incoming>,
    o: &ObjectPath,
) -> Reply {
    let (Some(name), Some(namespace)) = (&o.name, &o.namespace) else {
        return bad("exec needs a pod");
    };
    let key = crate::objects::ObjectKey::new(tessera_model::Kind::Pod, namespace, name);
    if control.objects().get(&key).is_none() {
        return error(answer::not_found(o.info, name));
    }
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let protocols = header("sec-websocket-protocol");
    let key = header("sec-websocket-key");
    if !header("upgrade").eq_ignore_ascii_case("websocket") || key.is_empty() {
        return bad("exec is served over WebSocket (Upgrade: websocket) only");
    }
    if !protocols.split(',').any(|p| p.trim() == ws::PROTOCOL) {
        return bad(&format!("exec speaks {} only", ws::PROTOCOL));
    }
    if flag(&req, "tty") {
        return bad("a TTY is not supported yet: run exec without -t");
    }
    let argv = params(&req, "command");
    if argv.is_empty() {
        return bad("you must specify at least one command for the container");
    }
    let container = params(&req, "container").into_iter().next();
    let Some(pods) = pods else {
        return bad("this control plane runs no pods");
    };
    let (cmd, guard) = match pods.exec_command(namespace, name, container.as_deref(), &argv) {
        Ok(c) => c,
        Err(e) => return bad(&e),
    };
    let stdin = flag(&req, "stdin");
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        run(TokioIo::new(upgraded), cmd, guard, stdin).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header("Sec-WebSocket-Accept", ws::accept_key(&key))
        .header("Sec-WebSocket-Protocol", ws::PROTOCOL)
        .body(http_body_util::BodyExt::boxed(
            http_body_util::Empty::<Bytes>::new(),
        ))
        .expect("a valid response")
}

/// Runs the command and carries its streams over the socket until it exits.
async fn run<S>(
    socket: S,
    cmd: std::process::Command,
    guard: Box<dyn std::any::Any + Send>,
    stdin: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (from_client, mut to_client) = tokio::io::split(socket);
    let mut command = tokio::process::Command::from(cmd);
    command
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let spawned = command.spawn();
    drop(guard);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(32);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if ws::write_all(&mut to_client, &frame).await.is_err() {
                return;
            }
        }
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "message": e.to_string(), "reason": "InternalError"});
            let _ = out_tx
                .send(ws::channel_message(
                    ws::STATUS,
                    status.to_string().as_bytes(),
                ))
                .await;
            let _ = out_tx.send(ws::frame(0x8, &1000u16.to_be_bytes())).await;
            drop(out_tx);
            let _ = writer.await;
            return;
        }
    };
    let pumps = pump_output(&mut child, &out_tx);
    let mut reader = pump_input(from_client, child.stdin.take());
    // A client that leaves takes its command with it: nothing runs on unattended.
    let exited = tokio::select! {
        status = child.wait() => status,
        _ = &mut reader => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let code = match exited {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        }
        Err(_) => 1,
    };
    for p in pumps {
        let _ = p.await;
    }
    reader.abort();
    let status = exit_status(code).to_string();
    let _ = out_tx
        .send(ws::channel_message(ws::STATUS, status.as_bytes()))
        .await;
    let _ = out_tx.send(ws::frame(0x8, &1000u16.to_be_bytes())).await;
    drop(out_tx);
    let _ = writer.await;
}

type Output = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// The command's stdout and stderr, each to its channel, until they end.
fn pump_output(
    child: &mut tokio::process::Child,
    out_tx: &mpsc::Sender<Vec<u8>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let streams: [(Option<Output>, u8); 2] = [
        (
            child.stdout.take().map(|s| Box::new(s) as Output),
            ws::STDOUT,
        ),
        (
            child.stderr.take().map(|s| Box::new(s) as Output),
            ws::STDERR,
        ),
    ];
    streams
        .into_iter()
        .filter_map(|(stream, channel)| stream.map(|s| (s, channel)))
        .map(|(mut s, channel)| {
            let tx = out_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tx
                                .send(ws::channel_message(channel, &buf[..n]))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

/// The client's messages: stdin to the command until the client closes that channel;
/// ends when the client closes the socket.
fn pump_input<R>(
    mut from_client: R,
    mut child_stdin: Option<tokio::process::ChildStdin>,
) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        loop {
            match ws::read_message(&mut from_client).await {
                Ok(Message::Binary(data)) => match data.split_first() {
                    Some((&ws::STDIN, rest)) => {
                        if let Some(i) = child_stdin.as_mut() {
                            if i.write_all(rest).await.is_err() {
                                child_stdin = None;
                            }
                        }
                    }
                    Some((&ws::CLOSE_CHANNEL, [ws::STDIN])) => child_stdin = None,
                    _ => {}
                },
                Ok(Message::Ping(_)) | Ok(Message::Other) => {}
                Ok(Message::Close) | Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_status(0)["status"], "Success");
        let s = exit_status(7);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "7");
    }
}
