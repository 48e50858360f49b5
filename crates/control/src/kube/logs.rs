//! `GET .../pods/{name}/log`: a container's output as plain text (`container`,
//! `tailLines`, `follow`), read from the file the runtime writes it to.

use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use tessera_model::resource::Kind;

use super::answer;
use super::path::ObjectPath;
use super::respond::{error, not_found_route, param, reply, stream, Reply};
use super::PodRuntime;
use crate::state::ControlState;

/// How often a followed log is read again for what was added.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// The last `n` lines of `text` (all of it when `n` is `None`).
pub fn tail(text: &str, n: Option<usize>) -> &str {
    let Some(n) = n else { return text };
    if n == 0 {
        return "";
    }
    // Skip the newline that ends the text, then count back `n` line starts.
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

pub fn serve(
    control: &ControlState,
    pods: Option<&dyn PodRuntime>,
    req: &Request<Incoming>,
    o: &ObjectPath,
) -> Reply {
    let (Some(name), Some(namespace)) = (&o.name, &o.namespace) else {
        return not_found_route();
    };
    if o.info.kind != Kind::Pod {
        return not_found_route();
    }
    let key = crate::objects::ObjectKey::new(Kind::Pod, namespace, name);
    if control.objects().get(&key).is_none() {
        return error(answer::not_found(o.info, name));
    }
    if param(req, "previous").is_some_and(|p| p == "true") {
        let message = format!("previous terminated container in pod \"{name}\" not found");
        return error(answer::status(400, "BadRequest", &message, None));
    }
    let Some(files) = pods else {
        return error(answer::status(
            400,
            "BadRequest",
            "this control plane runs no pods",
            None,
        ));
    };
    let container = param(req, "container");
    let path = match files.log_path(namespace, name, container.as_deref()) {
        Ok(p) => p,
        Err(e) => return error(answer::status(400, "BadRequest", &e, None)),
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines = param(req, "tailLines").and_then(|n| n.parse().ok());
    let shown = tail(&text, lines).to_string();
    if param(req, "follow").is_none_or(|f| f != "true") {
        return plain(shown);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let at = text.len() as u64;
    tokio::spawn(async move {
        if tx.send(Bytes::from(shown)).await.is_err() {
            return;
        }
        let gone = tx.clone();
        follow(
            path,
            at,
            |added| {
                let tx = tx.clone();
                async move { tx.send(added).await.is_ok() }
            },
            gone.closed(),
        )
        .await;
    });
    stream(rx, "text/plain")
}

/// What is added to the file at `path` after `at`, handed to `sink` as it comes, until
/// `sink` says stop (false), the client is `gone`, or the file goes away with its pod.
pub(super) async fn follow<F, Fut>(
    path: std::path::PathBuf,
    mut at: u64,
    mut sink: F,
    gone: impl std::future::Future<Output = ()>,
) where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::pin!(gone);
    loop {
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
            () = &mut gone => return,
        }
        let added = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> std::io::Result<Vec<u8>> {
                let mut f = std::fs::File::open(&path)?;
                f.seek(SeekFrom::Start(at))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                Ok(buf)
            }
        })
        .await;
        let Ok(Ok(added)) = added else { return };
        at += added.len() as u64;
        if !added.is_empty() && !sink(Bytes::from(added)).await {
            return;
        }
    }
}

fn plain(text: String) -> Reply {
    let mut r = reply(StatusCode::OK, &serde_json::Value::Null);
    *r.body_mut() = http_body_util::BodyExt::boxed(http_body_util::Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines() {
        let text = "a\nb\nc\n";
        assert_eq!(tail(text, None), text);
        assert_eq!(tail(text, Some(0)), "");
        assert_eq!(tail(text, Some(1)), "c\n");
        assert_eq!(tail(text, Some(2)), "b\nc\n");
        assert_eq!(tail(text, Some(9)), text);
        assert_eq!(tail("a\nb", Some(1)), "b");
        assert_eq!(tail("", Some(3)), "");
    }
}
