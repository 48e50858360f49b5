//! httpbin as curl users see it.

mod support;

use serde_json::json;
use support::{curl, grep_o, Running};

fn start() -> Running {
    Running::start(1, |mut listeners, shutdown| {
        tessera_apps::httpbin::serve(listeners.remove(0), shutdown)
    })
}

const XFCC: &str = r#"By=spiffe://a;Hash=x;Subject="";URI=spiffe://cluster.local/ns/full/sa/sleep"#;

#[test]
fn headers_show_the_client_cert_header_title_cased() {
    let server = start();
    let url = format!("http://127.0.0.1:{}/headers", server.port());
    let reply = curl(&[
        "-H",
        &format!("X-Forwarded-Client-Cert: {XFCC}"),
        "-H",
        "x-multi: a",
        "-H",
        "X-Multi: b",
        "-H",
        "X-Forwarded-For: 10.0.0.1",
        &url,
    ]);
    assert_eq!(reply.code, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );

    // What Istio's mTLS task greps for.
    assert_eq!(
        grep_o("URI=spiffe.*sa/[a-z]*", &reply.body),
        "URI=spiffe://cluster.local/ns/full/sa/sleep"
    );
    let headers = &reply.json()["headers"];
    assert_eq!(headers["X-Forwarded-Client-Cert"], XFCC);
    assert_eq!(headers["X-Multi"], "a,b");
    assert_eq!(headers["Accept"], "*/*");
    assert_eq!(headers["Host"], format!("127.0.0.1:{}", server.port()));
    assert!(headers["User-Agent"].as_str().unwrap().starts_with("curl/"));
    // Like httpbin, proxy-added headers are hidden unless asked for.
    assert!(headers.get("X-Forwarded-For").is_none());

    // httpbin's layout: 2-space indent, sorted keys, trailing newline.
    assert!(reply
        .body
        .starts_with("{\n  \"headers\": {\n    \"Accept\": \"*/*\",\n"));
    assert!(reply.body.ends_with("  }\n}\n"));
    assert!(reply.body.contains(r#"Subject=\"\";URI="#));

    let shown = curl(&[
        "-H",
        "X-Forwarded-For: 10.0.0.1",
        &format!("{url}?show_env=1"),
    ]);
    assert_eq!(shown.json()["headers"]["X-Forwarded-For"], "10.0.0.1");
    server.stop();
}

#[test]
fn status_codes() {
    let server = start();
    let base = format!("http://127.0.0.1:{}", server.port());

    let teapot = curl(&[&format!("{base}/status/418")]);
    assert_eq!(teapot.code, 418);
    assert!(teapot.body.contains("-=[ teapot ]=-"), "{}", teapot.body);
    assert!(teapot.body.ends_with("`\"\"\"`\n"));
    assert_eq!(
        teapot.header("x-more-info"),
        Some("http://tools.ietf.org/html/rfc2324")
    );

    let unavailable = curl(&[&format!("{base}/status/503")]);
    assert_eq!(unavailable.code, 503);
    assert_eq!(unavailable.body, "");

    // Any method.
    assert_eq!(
        curl(&["-X", "POST", &format!("{base}/status/201")]).code,
        201
    );

    let head = curl(&["-I", &format!("{base}/status/200")]);
    assert_eq!(head.code, 200);
    assert!(head.head.starts_with("HTTP/1.1 200"), "{}", head.head);

    let no_content = format!("{base}/status/204");
    for args in [
        vec![no_content.as_str()],
        vec!["-I", &no_content],
        vec!["--http2-prior-knowledge", "-I", &no_content],
    ] {
        let empty = curl(&args);
        assert_eq!(empty.code, 204, "{args:?}");
        assert_eq!(
            empty.header("content-length"),
            None,
            "{args:?}: {}",
            empty.head
        );
    }
    let h2_head = curl(&["--http2-prior-knowledge", "-I", &format!("{base}/get")]);
    assert_eq!(h2_head.code, 200);
    assert!(h2_head.header("content-length").is_some_and(|l| l != "0"));

    let either = curl(&[&format!("{base}/status/200,500")]).code;
    assert!(either == 200 || either == 500, "{either}");

    let invalid = curl(&[&format!("{base}/status/abc")]);
    assert_eq!(invalid.code, 400);
    assert_eq!(invalid.body, "Invalid status code");
    server.stop();
}

#[test]
fn get_ip_and_user_agent() {
    let server = start();
    let base = format!("http://127.0.0.1:{}", server.port());

    let get = curl(&[&format!("{base}/get?a=1&b=two+words&a=3")]).json();
    assert_eq!(get["args"], json!({"a": ["1", "3"], "b": "two words"}));
    assert_eq!(get["origin"], "127.0.0.1");
    assert_eq!(
        get["url"],
        format!("http://127.0.0.1:{}/get?a=1&b=two+words&a=3", server.port())
    );
    assert_eq!(
        get.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["args", "headers", "origin", "url"]
    );

    let ip = curl(&[&format!("{base}/ip")]);
    assert_eq!(ip.json(), json!({"origin": "127.0.0.1"}));
    assert_eq!(ip.body, "{\n  \"origin\": \"127.0.0.1\"\n}\n");

    let ua = curl(&["-A", "tester/1", &format!("{base}/user-agent")]).json();
    assert_eq!(ua, json!({"user-agent": "tester/1"}));

    let wrong_method = curl(&["-X", "POST", &format!("{base}/get")]);
    assert_eq!(wrong_method.code, 405);
    server.stop();
}

#[test]
fn anything_echoes_method_and_body() {
    let server = start();
    let base = format!("http://127.0.0.1:{}", server.port());

    let posted = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"k": [1, 2]}"#,
        &format!("{base}/anything/deep/path?x=y"),
    ])
    .json();
    assert_eq!(posted["method"], "PUT");
    assert_eq!(posted["data"], r#"{"k": [1, 2]}"#);
    assert_eq!(posted["json"], json!({"k": [1, 2]}));
    assert_eq!(posted["args"], json!({"x": "y"}));
    assert_eq!(
        posted["url"],
        format!("http://127.0.0.1:{}/anything/deep/path?x=y", server.port())
    );

    let form = curl(&["-d", "a=1&b=%2F", &format!("{base}/anything")]).json();
    assert_eq!(form["method"], "POST");
    assert_eq!(form["form"], json!({"a": "1", "b": "/"}));
    assert_eq!(form["data"], "");

    let post = curl(&[
        "-H",
        "Content-Type: text/plain",
        "-d",
        "hello",
        &format!("{base}/post"),
    ])
    .json();
    assert!(post.get("method").is_none());
    assert_eq!(post["data"], "hello");
    assert_eq!(post["form"], json!({}));
    assert_eq!(post["json"], json!(null));
    server.stop();
}

#[test]
fn delay_responds_like_get() {
    let server = start();
    let reply = curl(&[&format!("http://127.0.0.1:{}/delay/0.2?q=1", server.port())]);
    assert_eq!(reply.code, 200);
    let body = reply.json();
    assert_eq!(body["args"], json!({"q": "1"}));
    assert_eq!(body["origin"], "127.0.0.1");
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{}/delay/soon", server.port())]).code,
        400
    );
    server.stop();
}

#[test]
fn index_not_found_redirects_and_cors_preflight() {
    let server = start();
    let base = format!("http://127.0.0.1:{}", server.port());

    let index = curl(&[&format!("{base}/")]);
    assert_eq!(index.code, 200);
    assert!(index.body.contains("httpbin"));
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );

    let missing = curl(&[&format!("{base}/no/such/page")]);
    assert_eq!(missing.code, 404);
    assert!(missing.body.contains("<h1>Not Found</h1>"));

    let redirect = curl(&["-L", &format!("{base}/redirect/3")]);
    assert_eq!(redirect.code, 200);
    assert_eq!(
        redirect.json()["url"],
        format!("http://127.0.0.1:{}/get", server.port())
    );

    let preflight = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: http://example.com",
        "-H",
        "Access-Control-Request-Headers: x-custom",
        &format!("{base}/get"),
    ]);
    assert_eq!(preflight.code, 200);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://example.com")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("x-custom")
    );
    server.stop();
}

#[test]
fn h2c_prior_knowledge() {
    let server = start();
    let reply = curl(&[
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{}/headers", server.port()),
    ]);
    assert_eq!(reply.code, 200);
    assert!(reply.head.starts_with("HTTP/2 200"), "{}", reply.head);
    assert_eq!(
        reply.json()["headers"]["Host"],
        format!("127.0.0.1:{}", server.port())
    );
    server.stop();
}
