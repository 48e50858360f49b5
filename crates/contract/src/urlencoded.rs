//! `application/x-www-form-urlencoded`, as query strings carry it: what the built-in
//! httpbin echoes and what the control plane's Kubernetes API reads its parameters from.

use std::collections::BTreeMap;

/// `a=1&b=2&a=3` → `{a: [1, 3], b: [2]}`, `+` and `%XX` decoded.
pub fn parse(s: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k))
            .or_default()
            .push(percent_decode(v));
    }
    out
}

/// `+` as a space and `%XX` as its byte; a `%` not followed by two hex digits stays.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match hex_pair(bytes[i + 1], bytes[i + 2]) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`: a value that
/// reads back whole in a query string or a path segment.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(hi)? * 16 + digit(lo)?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_values_read_back() {
        for v in ["app=sleep,version!=v1", "a b&c=d", "ü/%", ""] {
            let q = format!("labelSelector={}", percent_encode(v));
            assert_eq!(parse(&q)["labelSelector"], [v.to_string()]);
        }
        assert_eq!(percent_encode("app in (a,b)"), "app%20in%20%28a%2Cb%29");
    }

    #[test]
    fn values_are_decoded() {
        assert_eq!(percent_decode("app%3Dsleep"), "app=sleep");
        assert_eq!(percent_decode("a+b%2Cc"), "a b,c");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%4"), "end%4");
    }

    #[test]
    fn repeated_keys_keep_their_order() {
        let args = parse("a=1&b=x+y&a=%2F2&c&bad=%zz&=e");
        assert_eq!(args["a"], ["1", "/2"]);
        assert_eq!(args["b"], ["x y"]);
        assert_eq!(args["c"], [""]);
        assert_eq!(args["bad"], ["%zz"]);
        assert_eq!(args[""], ["e"]);
    }
}
