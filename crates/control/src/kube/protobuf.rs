//! Kubernetes' protobuf encoding, read for the kinds `kubectl`'s typed commands send
//! that way (`kubectl create namespace`, `create configmap`, `create secret`, `create
//! token`): the `k8s\0` envelope (`runtime.Unknown`: type meta and raw bytes) and the
//! messages of Namespace, ConfigMap and Secret with their ObjectMeta, and TokenRequest's
//! spec, turned into the JSON the rest of the API reads. Other kinds are refused with 415,
//! and clients then send JSON.

use serde_json::{json, Map, Value};

const MAGIC: &[u8] = b"k8s\0";

/// One field of a message: its number and its value (a varint or bytes).
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at).ok_or("a varint runs past the end")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint is too long".into())
}

/// The fields of a message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let tag = varint(buf, &mut at)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let value = match wire {
            0 => Field::Varint(varint(buf, &mut at)?),
            1 => {
                at += 8;
                Field::Varint(0)
            }
            2 => {
                let len =
                    usize::try_from(varint(buf, &mut at)?).map_err(|_| "a length overflows")?;
                let end = at
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("a field runs past the end")?;
                let bytes = &buf[at..end];
                at = end;
                Field::Bytes(bytes)
            }
            5 => {
                at += 4;
                Field::Varint(0)
            }
            other => return Err(format!("wire type {other} is not supported")),
        };
        if at > buf.len() {
            return Err("a field runs past the end".into());
        }
        out.push((number, value));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
}

/// A `map<string, string>` (or `map<string, bytes>` as base64) entry.
fn map_entry(b: &[u8], base64: bool) -> Result<(String, String), String> {
    let (mut key, mut value) = (String::new(), String::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k)?,
            (2, Field::Bytes(v)) if base64 => value = tessera_model::kube::encode_base64(v),
            (2, Field::Bytes(v)) => value = text(v)?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert(map: &mut Map<String, Value>, field: &str, (k, v): (String, String)) {
    map.entry(field)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("an object")
        .insert(k, v.into());
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => drop(meta.insert("name".into(), text(v)?.into())),
            (2, Field::Bytes(v)) => drop(meta.insert("generateName".into(), text(v)?.into())),
            (3, Field::Bytes(v)) => drop(meta.insert("namespace".into(), text(v)?.into())),
            (11, Field::Bytes(v)) => insert(&mut meta, "labels", map_entry(v, false)?),
            (12, Field::Bytes(v)) => insert(&mut meta, "annotations", map_entry(v, false)?),
            _ => {}
        }
    }
    Ok(Value::Object(meta))
}

/// A TokenRequest's spec (`kubectl create token` sends it in protobuf): audiences (1),
/// boundObjectRef (3: kind 1, apiVersion 2, name 3, uid 4), expirationSeconds (4).
fn token_request_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = Map::new();
    let mut audiences = Vec::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => audiences.push(Value::from(text(v)?)),
            (4, Field::Varint(v)) => drop(spec.insert("expirationSeconds".into(), v.into())),
            (3, Field::Bytes(r)) => {
                let mut reference = Map::new();
                for (n, f) in fields(r)? {
                    let field = match n {
                        1 => "kind",
                        2 => "apiVersion",
                        3 => "name",
                        4 => "uid",
                        _ => continue,
                    };
                    if let Field::Bytes(v) = f {
                        reference.insert(field.into(), text(v)?.into());
                    }
                }
                spec.insert("boundObjectRef".into(), Value::Object(reference));
            }
            _ => {}
        }
    }
    if !audiences.is_empty() {
        spec.insert("audiences".into(), Value::Array(audiences));
    }
    Ok(Value::Object(spec))
}

/// The JSON of a protobuf-encoded object of a kind this module reads.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf body")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(envelope)? {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    match (n, f) {
                        (1, Field::Bytes(v)) => api_version = text(v)?,
                        (2, Field::Bytes(v)) => kind = text(v)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), api_version.into());
    object.insert("kind".into(), kind.clone().into());
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(m)) => drop(object.insert("metadata".into(), object_meta(m)?)),
            ("ConfigMap", 2, Field::Bytes(e)) => insert(&mut object, "data", map_entry(e, false)?),
            ("ConfigMap", 3, Field::Bytes(e)) => {
                insert(&mut object, "binaryData", map_entry(e, true)?)
            }
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                drop(object.insert("immutable".into(), (v != 0).into()))
            }
            ("Secret", 2, Field::Bytes(e)) => insert(&mut object, "data", map_entry(e, true)?),
            ("Secret", 3, Field::Bytes(v)) => drop(object.insert("type".into(), text(v)?.into())),
            ("Secret", 4, Field::Bytes(e)) => {
                insert(&mut object, "stringData", map_entry(e, false)?)
            }
            ("TokenRequest", 2, Field::Bytes(spec)) => {
                drop(object.insert("spec".into(), token_request_spec(spec)?))
            }
            ("Namespace" | "ConfigMap" | "Secret" | "TokenRequest", _, _) => {}
            (other, _, _) => {
                return Err(format!("{other} in protobuf is not supported; send JSON"))
            }
        }
    }
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(out: &mut Vec<u8>, n: u64, wire: u64) {
        encode_varint(out, n << 3 | wire);
    }

    fn encode_varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes(out: &mut Vec<u8>, n: u64, b: &[u8]) {
        tag(out, n, 2);
        encode_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        bytes(&mut e, 1, k.as_bytes());
        bytes(&mut e, 2, v);
        e
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = Vec::new();
        bytes(&mut tm, 1, api_version.as_bytes());
        bytes(&mut tm, 2, kind.as_bytes());
        let mut out = MAGIC.to_vec();
        bytes(&mut out, 1, &tm);
        bytes(&mut out, 2, raw);
        bytes(&mut out, 4, b"application/vnd.kubernetes.protobuf");
        out
    }

    #[test]
    fn a_namespace_as_kubectl_create_sends_it() {
        let mut meta = Vec::new();
        bytes(&mut meta, 1, b"full");
        bytes(&mut meta, 11, &entry("team", b"a"));
        let mut ns = Vec::new();
        bytes(&mut ns, 1, &meta);
        bytes(&mut ns, 2, b""); // an empty spec
        let v = to_json(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "full", "labels": {"team": "a"}}})
        );
    }

    #[test]
    fn secrets_and_configmaps_keep_their_data() {
        let mut meta = Vec::new();
        bytes(&mut meta, 1, b"nginxsecret");
        let mut secret = Vec::new();
        bytes(&mut secret, 1, &meta);
        bytes(&mut secret, 2, &entry("tls.crt", b"\x00\xffcert"));
        bytes(&mut secret, 3, b"kubernetes.io/tls");
        let v = to_json(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(v["type"], "kubernetes.io/tls");
        assert_eq!(
            v["data"]["tls.crt"],
            tessera_model::kube::encode_base64(b"\x00\xffcert")
        );

        let mut cm = Vec::new();
        bytes(&mut cm, 1, &meta);
        bytes(&mut cm, 2, &entry("default.conf", b"server {}"));
        tag(&mut cm, 4, 0);
        encode_varint(&mut cm, 1);
        let v = to_json(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(v["data"]["default.conf"], "server {}");
        assert_eq!(v["immutable"], true);
    }

    #[test]
    fn other_kinds_and_bad_bytes_are_refused() {
        let mut meta = Vec::new();
        bytes(&mut meta, 1, b"x");
        let mut pod = Vec::new();
        bytes(&mut pod, 1, &meta);
        bytes(&mut pod, 2, b"spec");
        assert!(to_json(&envelope("v1", "Pod", &pod)).is_err());
        assert!(to_json(b"{}").is_err());
        assert!(to_json(b"k8s\0\x0a\xff\xff\xff\xff\x0f").is_err());
        let mut cut = envelope("v1", "Namespace", &pod);
        cut.truncate(cut.len() - 3);
        assert!(to_json(&cut).is_err());
    }
}
