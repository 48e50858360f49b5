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
    reply_as(code, body, "application/json")
}

/// A JSON body of another media type (aggregated discovery names its own).
pub(super) fn reply_as(code: StatusCode, body: &Value, content_type: &str) -> Reply {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, content_type)
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

/// Every value of a query parameter (`command=ls&command=-l`), decoded.
pub(super) fn params(req: &Request<Incoming>, name: &str) -> Vec<String> {
    tessera_contract::urlencoded::parse(req.uri().query().unwrap_or(""))
        .remove(name)
        .unwrap_or_default()
}

/// A query parameter's first value.
pub(super) fn param(req: &Request<Incoming>, name: &str) -> Option<String> {
    params(req, name).into_iter().next()
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
