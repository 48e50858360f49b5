//! The shapes of the API's answers on the wire: a JSON body, a `Status` error with its
//! code, a streamed body (watch events, followed logs), and the query parameters.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

use super::answer;

pub(super) type Reply = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

pub(super) fn reply(code: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))))
        .expect("a valid response")
}

pub(super) fn error(body: Value) -> Reply {
    let code = body["code"]
        .as_u64()
        .and_then(|c| StatusCode::from_u16(c as u16).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply(code, &body)
}

pub(super) fn not_found_route() -> Reply {
    error(answer::status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        None,
    ))
}

/// One query parameter's value.
pub(super) fn param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn stream(rx: tokio::sync::mpsc::Receiver<Bytes>, content_type: &str) -> Reply {
    use tokio_stream::StreamExt;
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(hyper::body::Frame::data(b)));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("app%3Dsleep"), "app=sleep");
        assert_eq!(percent_decode("a+b%2Cc"), "a b,c");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%4"), "end%4");
    }
}
