//! `GET .../pods/{name}/exec` upgraded to a WebSocket (`v5.channel.k8s.io`), as
//! `kubectl exec` (and `kubectl cp`, through `tar`) opens it: the command runs in the
//! container; its stdout and stderr come back on channels 1 and 2, stdin goes in on
//! channel 0, and the exit status is a `Status` on channel 3. With `tty=true` the command
//! runs on a terminal of its own: its output comes back on channel 1 and the client's
//! terminal size (channel 4) follows the client's.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::answer;
use super::path::ObjectPath;
use super::respond::{error, params, Reply};
use super::websocket::{self as ws, Message};
use super::{Exec, PodRuntime, Resize};
use crate::state::ControlState;

pub(super) fn bad(message: &str) -> Reply {
    error(answer::status(400, "BadRequest", message, None))
}

pub(super) fn flag(req: &Request<Incoming>, name: &str) -> bool {
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
    let key = match websocket_key(&req, "exec") {
        Ok(k) => k,
        Err(why) => return bad(&why),
    };
    let tty = flag(&req, "tty");
    let argv = params(&req, "command");
    if argv.is_empty() {
        return bad("you must specify at least one command for the container");
    }
    let container = params(&req, "container").into_iter().next();
    let Some(pods) = pods else {
        return bad("this control plane runs no pods");
    };
    let exec = match pods.exec_command(namespace, name, container.as_deref(), &argv, tty) {
        Ok(c) => c,
        Err(e) => return bad(&e),
    };
    let stdin = flag(&req, "stdin");
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        run(TokioIo::new(upgraded), exec, stdin).await;
    });
    switching(&key)
}

/// The client's WebSocket key, once the request is checked to be a WebSocket upgrade
/// that speaks our channel protocol; otherwise why not (a 400).
pub(super) fn websocket_key(req: &Request<Incoming>, what: &str) -> Result<String, String> {
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = header("sec-websocket-key");
    if !header("upgrade").eq_ignore_ascii_case("websocket") || key.is_empty() {
        return Err(format!(
            "{what} is served over WebSocket (Upgrade: websocket) only"
        ));
    }
    let protocols = header("sec-websocket-protocol");
    if !protocols.split(',').any(|p| p.trim() == ws::PROTOCOL) {
        return Err(format!("{what} speaks {} only", ws::PROTOCOL));
    }
    Ok(key)
}

/// 101 Switching Protocols to our channel protocol.
pub(super) fn switching(key: &str) -> Reply {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header("Sec-WebSocket-Accept", ws::accept_key(key))
        .header("Sec-WebSocket-Protocol", ws::PROTOCOL)
        .body(http_body_util::BodyExt::boxed(
            http_body_util::Empty::<Bytes>::new(),
        ))
        .expect("a valid response")
}

/// How long the output of a command on a terminal may still come after it exits (a
/// process it left in the background may hold the terminal open).
const TERMINAL_DRAIN: Duration = Duration::from_millis(500);

/// Runs the command and carries its streams over the socket until it exits.
async fn run<S>(socket: S, exec: Exec, stdin: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (from_client, mut to_client) = tokio::io::split(socket);
    let Exec {
        command,
        guard,
        terminal,
    } = exec;
    let mut command = tokio::process::Command::from(command);
    if terminal.is_none() {
        command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    command.kill_on_drop(true);
    let spawned = command.spawn();
    // The terminal's device closes here too, so its output ends when the command's does.
    drop(command);
    drop(guard);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(32);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if ws::write_all(&mut to_client, &frame).await.is_err() {
                return;
            }
        }
    });
    // The status ends the session, then the socket is closed.
    let finish = |out_tx: mpsc::Sender<Vec<u8>>, status: serde_json::Value| async move {
        let _ = out_tx
            .send(ws::channel_message(
                ws::STATUS,
                status.to_string().as_bytes(),
            ))
            .await;
        let _ = out_tx.send(ws::frame(0x8, &1000u16.to_be_bytes())).await;
        drop(out_tx);
        let _ = writer.await;
    };
    let terminal = match terminal.map(|t| {
        // SAFETY: the File owns its descriptor, which stays open and the same for as long
        // as the AsyncFd holds the File.
        unsafe { AsyncFd::register(t.controller) }.map(|fd| (Arc::new(fd), t.resize))
    }) {
        Some(Err(e)) => return finish(out_tx, failure(&e.to_string())).await,
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return finish(out_tx, failure(&e.to_string())).await,
    };
    let (pumps, input) = match terminal {
        None => (
            pump_output(&mut child, &out_tx),
            Input::Pipe(child.stdin.take()),
        ),
        Some((fd, resize)) => (
            vec![pump_terminal(fd.clone(), &out_tx)],
            Input::Terminal { fd, resize },
        ),
    };
    let mut reader = pump_input(from_client, input);
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
        let abort = p.abort_handle();
        if tokio::time::timeout(TERMINAL_DRAIN, p).await.is_err() {
            abort.abort();
        }
    }
    reader.abort();
    finish(out_tx, exit_status(code)).await
}

fn failure(message: &str) -> serde_json::Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"})
}

/// Where the client's input goes: the command's stdin, or its terminal.
enum Input {
    Pipe(Option<tokio::process::ChildStdin>),
    Terminal {
        fd: Arc<AsyncFd<std::fs::File>>,
        resize: Resize,
    },
}

/// The terminal's output, to the stdout channel, until the terminal closes.
fn pump_terminal(
    fd: Arc<AsyncFd<std::fs::File>>,
    out_tx: &mpsc::Sender<Vec<u8>>,
) -> tokio::task::JoinHandle<()> {
    let tx = out_tx.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return;
            };
            match ready.try_io(|f| (&mut f.get_ref()).read(&mut buf)) {
                Err(_would_block) => continue,
                // End of the terminal (EIO once the command and its children are gone).
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => {
                    if tx
                        .send(ws::channel_message(ws::STDOUT, &buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
}

/// Writes all of `data` to the terminal.
async fn write_terminal(fd: &AsyncFd<std::fs::File>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut ready = fd.writable().await?;
        if let Ok(written) = ready.try_io(|f| (&mut f.get_ref()).write(data)) {
            data = &data[written?..];
        }
    }
    Ok(())
}

/// A terminal size as kubectl sends it on the resize channel.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TerminalSize {
    width: u16,
    height: u16,
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

/// The client's messages: stdin to the command (or its terminal) until the client closes
/// that channel, and resizes of the terminal; ends when the client closes the socket.
fn pump_input<R>(mut from_client: R, mut input: Input) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        loop {
            let data = match ws::read_message(&mut from_client).await {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Ping(_)) | Ok(Message::Other) => continue,
                Ok(Message::Close) | Err(_) => return,
            };
            match (data.split_first(), &mut input) {
                (Some((&ws::STDIN, rest)), Input::Pipe(stdin)) => {
                    if let Some(i) = stdin.as_mut() {
                        if i.write_all(rest).await.is_err() {
                            *stdin = None;
                        }
                    }
                }
                (Some((&ws::STDIN, rest)), Input::Terminal { fd, .. }) => {
                    let _ = write_terminal(fd, rest).await;
                }
                (Some((&ws::CLOSE_CHANNEL, [ws::STDIN])), Input::Pipe(stdin)) => *stdin = None,
                (Some((&ws::RESIZE, rest)), Input::Terminal { fd, resize }) => {
                    if let Ok(size) = serde_json::from_slice::<TerminalSize>(rest) {
                        let _ = resize(fd.get_ref(), size.width, size.height);
                    }
                }
                _ => {}
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
