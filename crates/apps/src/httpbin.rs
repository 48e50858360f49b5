//! httpbin (`docker.io/kennethreitz/httpbin`) as curl users see it: the endpoints Istio's
//! tasks use, with httpbin's JSON shapes (sorted keys, 2-space indent), header spelling
//! (`X-Forwarded-Client-Cert`) and CORS headers.
//!
//! Where httpbin's own behaviour is a choice, it is kept: `origin` is `X-Forwarded-For` when
//! present (else the peer's IP), proxy-added headers such as `X-Forwarded-For` and
//! `X-Request-Id` are hidden from `headers` unless the query has `show_env`, and
//! `/status/200,500` (optionally weighted, `200:3,500:1`) picks one code at random. Unlike
//! httpbin, `/status/1xx` is refused with 400: an informational code can't end a response.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Map, Value};
use tessera_contract::urlencoded;
use tokio::net::TcpListener;

use crate::serve::{accept_loop, Body, Stop};

/// Requests are echoed back, so they are held in memory: cap them.
const MAX_BODY: usize = 16 << 20;
/// httpbin caps `/delay/{n}` at 10 seconds.
const MAX_DELAY: f64 = 10.0;

/// Headers a proxy or load balancer adds, which httpbin leaves out of `headers` unless the
/// query has `show_env` (its `ENV_HEADERS`).
const ENV_HEADERS: &[&str] = &[
    "X-Varnish",
    "X-Request-Start",
    "X-Heroku-Queue-Depth",
    "X-Real-Ip",
    "X-Forwarded-Proto",
    "X-Forwarded-Protocol",
    "X-Forwarded-Ssl",
    "X-Heroku-Queue-Wait-Time",
    "X-Forwarded-For",
    "X-Heroku-Dynos-In-Use",
    "X-Forwarded-Port",
    "X-Request-Id",
    "Via",
    "Total-Route-Time",
    "Connect-Time",
];

const TEAPOT: &str = r#"
    -=[ teapot ]=-

       _...._
     .'  _ _ `.
    | ."` ^ `". _,
    \_;`"---"`|//
      |       ;/
      \_     _/
        `"""`
"#;

const INDEX: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>httpbin.org</title>
</head>
<body>
<h1>httpbin.org</h1>
<p>A simple HTTP Request &amp; Response Service.</p>
<ul>
<li><a href="/headers">/headers</a> Returns the request's headers.</li>
<li><a href="/ip">/ip</a> Returns the requester's IP address.</li>
<li><a href="/user-agent">/user-agent</a> Returns the User-Agent header.</li>
<li><a href="/get">/get</a> Returns the GET request's data.</li>
<li><a href="/anything">/anything</a> Returns anything passed in the request.</li>
<li><a href="/status/418">/status/{codes}</a> Returns a given status code.</li>
<li><a href="/delay/1">/delay/{n}</a> Returns a delayed response (at most 10 seconds).</li>
<li><a href="/redirect/3">/redirect/{n}</a> 302 redirects n times.</li>
</ul>
</body>
</html>
"#;

// Flask's (werkzeug's) error pages, which httpbin serves.
const NOT_FOUND: &str = r#"<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<title>404 Not Found</title>
<h1>Not Found</h1>
<p>The requested URL was not found on the server.  If you entered the URL manually please check your spelling and try again.</p>
"#;

const METHOD_NOT_ALLOWED: &str = r#"<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<title>405 Method Not Allowed</title>
<h1>Method Not Allowed</h1>
<p>The method is not allowed for the requested URL.</p>
"#;

/// Serves httpbin on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (stop, trigger) = Stop::new(shutdown);
    tokio::join!(trigger, accept_loop(listener, None, handle, stop));
}

async fn handle(req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    // httpbin echoes the caller's Origin so browsers accept credentials; curl sees `*`.
    let allow_origin = req
        .headers()
        .get(header::ORIGIN)
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    let mut resp = if req.method() == Method::OPTIONS {
        preflight(req.headers())
    } else {
        match Info::read(req, peer).await {
            Ok(info) => route(&info).await,
            Err(resp) => resp,
        }
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    resp
}

/// A CORS preflight, answered for every path like httpbin does.
fn preflight(headers: &HeaderMap) -> Response<Body> {
    let mut resp = html(StatusCode::OK, "");
    let h = resp.headers_mut();
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("GET, POST, PUT, DELETE, PATCH, OPTIONS, HEAD"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, PATCH, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("3600"),
    );
    if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    resp
}

async fn route(info: &Info) -> Response<Body> {
    let path = info.uri.path();
    let (head, tail) = match path.trim_start_matches('/').split_once('/') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path.trim_start_matches('/'), None),
    };
    let get_only = |resp: &dyn Fn(&Info) -> Response<Body>| {
        if matches!(info.method, Method::GET | Method::HEAD) {
            resp(info)
        } else {
            method_not_allowed("GET, HEAD, OPTIONS")
        }
    };
    match (head, tail) {
        ("", None) => get_only(&|_| html(StatusCode::OK, INDEX)),
        ("headers", None) => get_only(&|i| json_ok(&json!({ "headers": i.headers() }))),
        ("ip", None) => get_only(&|i| json_ok(&json!({ "origin": i.origin() }))),
        ("user-agent", None) => get_only(&|i| {
            let ua = i.headers.get(header::USER_AGENT).map(lossy);
            json_ok(&json!({ "user-agent": ua }))
        }),
        ("get", None) => get_only(&|i| json_ok(&i.dict(&["url", "args", "headers", "origin"]))),
        ("post" | "put" | "patch" | "delete", None) => {
            if info.method.as_str().eq_ignore_ascii_case(head) {
                json_ok(&info.dict(&[
                    "url", "args", "form", "data", "origin", "headers", "files", "json",
                ]))
            } else {
                method_not_allowed(&format!("{}, OPTIONS", head.to_ascii_uppercase()))
            }
        }
        ("anything", _) => json_ok(&info.dict(&[
            "url", "args", "headers", "origin", "method", "form", "data", "files", "json",
        ])),
        ("status", Some(codes)) if !codes.contains('/') => status(codes),
        ("delay", Some(secs)) if !secs.contains('/') => match secs.parse::<f64>() {
            Ok(secs) if !secs.is_nan() => {
                tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, MAX_DELAY))).await;
                json_ok(&info.dict(&["url", "args", "form", "data", "origin", "headers", "files"]))
            }
            _ => html(StatusCode::BAD_REQUEST, "Invalid delay"),
        },
        ("redirect" | "relative-redirect", Some(n)) => match n.parse::<u32>() {
            Ok(n) if n > 0 => get_only(&|_| {
                redirect(if n == 1 {
                    "/get".to_string()
                } else {
                    format!("/relative-redirect/{}", n - 1)
                })
            }),
            _ => html(StatusCode::NOT_FOUND, NOT_FOUND),
        },
        _ => html(StatusCode::NOT_FOUND, NOT_FOUND),
    }
}

/// `/status/{codes}`: one code, or a comma-separated list of `code[:weight]` to pick from at
/// random (httpbin's weighted choice).
fn status(codes: &str) -> Response<Body> {
    let invalid = || html(StatusCode::BAD_REQUEST, "Invalid status code");
    let code = if codes.contains(',') {
        let mut choices = Vec::new();
        for choice in codes.split(',') {
            let (code, weight) = choice.split_once(':').unwrap_or((choice, "1"));
            match (code.trim().parse::<u16>(), weight.trim().parse::<f64>()) {
                (Ok(code), Ok(weight)) if weight >= 0.0 => choices.push((code, weight)),
                _ => return invalid(),
            }
        }
        weighted_choice(&choices, random_unit())
    } else {
        match codes.trim().parse::<u16>() {
            Ok(code) => code,
            Err(_) => return invalid(),
        }
    };
    // 1xx are not final responses: HTTP can't send one as the answer.
    let Some(code) = StatusCode::from_u16(code)
        .ok()
        .filter(|c| !c.is_informational())
    else {
        return invalid();
    };
    let mut resp = html(code, if code.as_u16() == 418 { TEAPOT } else { "" });
    let h = resp.headers_mut();
    match code.as_u16() {
        301 | 302 | 303 | 305 | 307 => {
            h.insert(header::LOCATION, HeaderValue::from_static("/redirect/1"));
        }
        401 => {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Fake Realm\""),
            );
        }
        407 => {
            h.insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Fake Realm\""),
            );
        }
        418 => {
            h.insert(
                "x-more-info",
                HeaderValue::from_static("http://tools.ietf.org/html/rfc2324"),
            );
        }
        _ => {}
    }
    resp
}

/// The choice `x` (uniform in [0, 1)) falls on, weights being relative.
fn weighted_choice(choices: &[(u16, f64)], x: f64) -> u16 {
    let total: f64 = choices.iter().map(|(_, w)| w).sum();
    let mut cumulative = 0.0;
    for &(code, weight) in choices {
        cumulative += weight;
        if x * total < cumulative {
            return code;
        }
    }
    choices.last().map_or(200, |&(code, _)| code)
}

/// Uniform in [0, 1). `RandomState` is freshly keyed on every call, which is random enough
/// to pick a status code without a dependency.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What httpbin's views read from a request.
struct Info {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: SocketAddr,
    body: Bytes,
}

impl Info {
    async fn read(req: Request<Incoming>, peer: SocketAddr) -> Result<Info, Response<Body>> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return Err(html(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request body too large",
                ))
            }
            Err(_) => return Err(html(StatusCode::BAD_REQUEST, "Bad request body")),
        };
        Ok(Info {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            peer,
            body,
        })
    }

    /// httpbin's `get_dict`: the named fields, keys sorted.
    fn dict(&self, keys: &[&str]) -> Value {
        let mut fields = BTreeMap::new();
        for &key in keys {
            let value = match key {
                "url" => Value::String(self.url()),
                "args" => multi_map(urlencoded::parse(self.uri.query().unwrap_or(""))),
                "headers" => self.headers(),
                "origin" => Value::String(self.origin()),
                "method" => Value::String(self.method.to_string()),
                "form" => multi_map(if self.is_form() {
                    urlencoded::parse(&String::from_utf8_lossy(&self.body))
                } else {
                    BTreeMap::new()
                }),
                "data" if self.is_form() => Value::String(String::new()),
                "data" => Value::String(String::from_utf8_lossy(&self.body).into_owned()),
                "files" => Value::Object(Map::new()),
                "json" => serde_json::from_slice(&self.body).unwrap_or(Value::Null),
                _ => continue,
            };
            fields.insert(key, value);
        }
        // Insert in sorted order, so keys stay sorted whatever serde_json's map is.
        Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// Header names title-cased like werkzeug spells them, repeated headers joined with ",".
    fn headers(&self) -> Value {
        let show_env = urlencoded::parse(self.uri.query().unwrap_or("")).contains_key("show_env");
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &self.headers {
            let name = title_case(name.as_str());
            if !show_env && ENV_HEADERS.contains(&name.as_str()) {
                continue;
            }
            let value = lossy(value);
            headers
                .entry(name)
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        // HTTP/2 carries the host as :authority, which httpbin (behind gunicorn) shows as Host.
        if let Some(authority) = self.uri.authority() {
            headers
                .entry("Host".to_string())
                .or_insert_with(|| authority.to_string());
        }
        Value::Object(
            headers
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    }

    fn origin(&self) -> String {
        match self.headers.get("x-forwarded-for") {
            Some(xff) => lossy(xff),
            None => self.peer.ip().to_string(),
        }
    }

    fn url(&self) -> String {
        let scheme = match self.headers.get("x-forwarded-proto") {
            Some(proto) if proto.as_bytes().eq_ignore_ascii_case(b"https") => "https",
            _ => "http",
        };
        let host = self
            .headers
            .get(header::HOST)
            .map(lossy)
            .or_else(|| self.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".to_string());
        let target = self
            .uri
            .path_and_query()
            .map_or_else(|| self.uri.path().to_string(), |pq| pq.to_string());
        format!("{scheme}://{host}{target}")
    }

    fn is_form(&self) -> bool {
        self.headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
            ct.as_bytes()
                .starts_with(b"application/x-www-form-urlencoded")
        })
    }
}

/// Python's `str.title()`, which werkzeug applies to header names: a letter is upper-case
/// after a non-letter and lower-case after a letter (`x-b3-traceid` → `X-B3-Traceid`).
fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut after_letter = false;
    for c in name.chars() {
        if c.is_alphabetic() {
            if after_letter {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            after_letter = true;
        } else {
            out.push(c);
            after_letter = false;
        }
    }
    out
}

/// httpbin's multi-dicts: one value as a string, repeated keys as a list.
fn multi_map(map: BTreeMap<String, Vec<String>>) -> Value {
    Value::Object(
        map.into_iter()
            .map(|(k, mut vs)| {
                let v = if vs.len() == 1 {
                    Value::String(vs.remove(0))
                } else {
                    Value::Array(vs.into_iter().map(Value::String).collect())
                };
                (k, v)
            })
            .collect(),
    )
}

fn lossy(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

fn json_ok(value: &Value) -> Response<Body> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    respond(StatusCode::OK, "application/json", body)
}

fn html(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", body)
}

fn method_not_allowed(allow: &str) -> Response<Body> {
    let mut resp = html(StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED);
    if let Ok(allow) = HeaderValue::from_str(allow) {
        resp.headers_mut().insert(header::ALLOW, allow);
    }
    resp
}

/// Werkzeug's redirect: 302 with a small HTML body.
fn redirect(location: String) -> Response<Body> {
    let body = format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<title>Redirecting...</title>\n<h1>Redirecting...</h1>\n<p>You should be redirected automatically to target URL: <a href=\"{location}\">{location}</a>.  If not click the link.\n"
    );
    let mut resp = respond(StatusCode::FOUND, "text/html; charset=utf-8", body);
    if let Ok(location) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_cases_like_werkzeug() {
        assert_eq!(
            title_case("x-forwarded-client-cert"),
            "X-Forwarded-Client-Cert"
        );
        assert_eq!(title_case("user-agent"), "User-Agent");
        assert_eq!(title_case("host"), "Host");
        assert_eq!(title_case("x-b3-traceid"), "X-B3-Traceid");
        assert_eq!(title_case("X-ENVOY-attempt-COUNT"), "X-Envoy-Attempt-Count");
        assert_eq!(title_case("content-md5"), "Content-Md5");
    }

    #[test]
    fn urlencoded_decoding() {
        let args = urlencoded::parse("a=1&b=x+y&a=%2F2&c&bad=%zz&=e");
        assert_eq!(args["a"], ["1", "/2"]);
        assert_eq!(args["b"], ["x y"]);
        assert_eq!(args["c"], [""]);
        assert_eq!(args["bad"], ["%zz"]);
        assert_eq!(args[""], ["e"]);
        assert_eq!(
            multi_map(args),
            json!({"": "e", "a": ["1", "/2"], "b": "x y", "bad": "%zz", "c": ""})
        );
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let choices = [(200, 1.0), (500, 3.0)];
        assert_eq!(weighted_choice(&choices, 0.0), 200);
        assert_eq!(weighted_choice(&choices, 0.24), 200);
        assert_eq!(weighted_choice(&choices, 0.25), 500);
        assert_eq!(weighted_choice(&choices, 0.999), 500);
        assert_eq!(weighted_choice(&[(503, 0.0)], 0.5), 503);
    }

    #[test]
    fn status_codes() {
        assert_eq!(status("503").status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status("418").status().as_u16(), 418);
        assert_eq!(status("teapot").status(), StatusCode::BAD_REQUEST);
        assert_eq!(status("100").status(), StatusCode::BAD_REQUEST);
        assert_eq!(status("1000").status(), StatusCode::BAD_REQUEST);
        assert_eq!(status("200,x").status(), StatusCode::BAD_REQUEST);
        let picked = status("201,202:2").status().as_u16();
        assert!(picked == 201 || picked == 202, "{picked}");
        assert_eq!(status("301").headers()[header::LOCATION], "/redirect/1");
    }
}
