//! The VirtualService route matcher: a route table (JSON, as the control plane sends it)
//! and a request, separated by a NUL byte. Compiling refuses bad tables with a message;
//! matching, rewriting, redirecting and picking a weighted destination never panic.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tessera_contract::config::{RouteAction, VirtualHost};
use tessera_proxy::config::route::{
    compile, find_rule, find_vhost, host_of, pick, redirect_location, rewrite_path, RequestView,
};

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let Ok(vhosts) = serde_json::from_slice::<Vec<VirtualHost>>(&data[..split]) else {
        return;
    };
    let Ok(table) = compile(&vhosts) else {
        return;
    };
    let Ok(request) = std::str::from_utf8(&data[split + 1..]) else {
        return;
    };
    // path, query, method, authority, scheme, then `name: value` header lines.
    let mut lines = request.split('\n');
    let path = lines.next().unwrap_or("/");
    let query = lines.next().filter(|q| !q.is_empty());
    let method = lines.next().unwrap_or("GET");
    let authority = lines.next().unwrap_or("");
    let scheme = lines.next().unwrap_or("http");
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(": ") {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                headers.append(k, v);
            }
        }
    }
    let view = RequestView {
        path,
        query,
        method,
        authority,
        scheme,
        headers: &headers,
        port: 80,
    };
    let Some(vhost) = find_vhost(&table, &host_of(authority)) else {
        return;
    };
    let Some((rule, matched)) = find_rule(vhost, &view) else {
        return;
    };
    match &rule.action {
        RouteAction::Forward {
            destinations,
            rewrite_uri,
            ..
        } => {
            for n in 0..4 {
                if let Some(i) = pick(destinations, n) {
                    assert!(i < destinations.len());
                }
            }
            if let Some(to) = rewrite_uri {
                let _ = rewrite_path(path, query, matched, to);
            }
        }
        RouteAction::Redirect {
            uri,
            authority: to_authority,
            scheme: to_scheme,
            port,
            ..
        } => {
            let location = redirect_location(
                &view,
                &host_of(authority),
                uri.as_deref(),
                to_authority.as_deref(),
                to_scheme.as_deref(),
                *port,
            );
            assert!(location.contains("://"));
        }
        RouteAction::DirectResponse { .. } => {}
    }
});
