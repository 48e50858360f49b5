//! Service-account tokens, as the API server issues and checks them: TokenRequest
//! (`POST .../serviceaccounts/NAME/token`, what `kubectl create token` and projected volumes
//! use) mints a token for audiences, bound to a pod; TokenReview (`POST
//! /apis/authentication.k8s.io/v1/tokenreviews`) says whom a token authenticates, for which
//! of the asked audiences, while its service account and bound pod still exist.
//! Decisions are pure ([`review`], [`request`]); the server passes the objects and the key.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tessera_ca::token::{BoundPod, TokenKey, DEFAULT_TOKEN_TTL};
use tessera_model::{Kind, ObjectKey};

use super::answer;
use crate::objects::Objects;

/// The audience of a token that names none: the API server's own.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// The shortest expiry a TokenRequest may ask for, as the API server's.
const MIN_EXPIRATION: u64 = 600;

/// A request's audiences; none named is the API server's own.
fn audiences(list: &Value) -> Vec<String> {
    let named: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if named.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        named
    }
}

fn uid_of(objects: &Objects, key: &ObjectKey) -> Option<String> {
    let stored = objects.get(key)?;
    Some(stored.resource.metadata().uid.clone().unwrap_or_default())
}

/// A TokenRequest for `ns`/`sa`: the TokenRequest answered (201), or the `Status` refusing it.
pub fn request(
    objects: &Objects,
    key: &TokenKey,
    ns: &str,
    sa: &str,
    body: &Value,
    now: SystemTime,
) -> Result<Value, Value> {
    if uid_of(objects, &ObjectKey::new(Kind::ServiceAccount, ns, sa)).is_none() {
        return Err(answer::status(
            404,
            "NotFound",
            &format!("serviceaccounts \"{sa}\" not found"),
            None,
        ));
    }
    let spec = &body["spec"];
    let invalid = |field: &str, why: &str| {
        answer::status(
            422,
            "Invalid",
            &format!("TokenRequest.authentication.k8s.io \"{sa}\" is invalid: {field}: {why}"),
            None,
        )
    };
    let seconds = spec["expirationSeconds"]
        .as_u64()
        .unwrap_or(DEFAULT_TOKEN_TTL.as_secs());
    if seconds < MIN_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            "may not specify a duration less than 10 minutes",
        ));
    }
    let audiences = audiences(&spec["audiences"]);
    let pod = match &spec["boundObjectRef"] {
        Value::Null => None,
        r => Some(
            bound_pod(objects, ns, sa, r).map_err(|why| invalid("spec.boundObjectRef", &why))?,
        ),
    };
    let ttl = Duration::from_secs(seconds);
    let token = key.mint_bound(ns, sa, ttl, now, audiences.clone(), pod);
    let claims = key.verify(&token, now).expect("a token just minted");
    let expires = time::OffsetDateTime::from_unix_timestamp(claims.exp as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let mut answered = body.clone();
    answered["apiVersion"] = "authentication.k8s.io/v1".into();
    answered["kind"] = "TokenRequest".into();
    answered["metadata"]["name"] = sa.into();
    answered["metadata"]["namespace"] = ns.into();
    answered["spec"]["audiences"] = json!(audiences);
    answered["spec"]["expirationSeconds"] = json!(claims.exp - claims.iat);
    answered["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(answered)
}

/// The pod a TokenRequest binds to: it exists, runs as the service account, and has the
/// uid named (if one is).
fn bound_pod(objects: &Objects, ns: &str, sa: &str, r: &Value) -> Result<BoundPod, String> {
    if r["kind"] != "Pod" {
        return Err(format!(
            "Unsupported value: {}: supported values: \"Pod\"",
            r["kind"]
        ));
    }
    let name = r["name"].as_str().unwrap_or_default();
    let stored = objects
        .get(&ObjectKey::new(Kind::Pod, ns, name))
        .ok_or_else(|| format!("pods \"{name}\" not found"))?;
    let pod = stored.resource.to_json();
    let runs_as = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    if runs_as != sa {
        return Err(format!(
            "pod \"{name}\" runs as service account \"{runs_as}\", not \"{sa}\""
        ));
    }
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(asked) = r["uid"].as_str().filter(|u| !u.is_empty()) {
        if asked != uid {
            return Err(format!("the uid of pod \"{name}\" is {uid}, not {asked}"));
        }
    }
    Ok(BoundPod {
        name: name.to_string(),
        uid,
    })
}

/// A TokenReview answered: `status.authenticated` and whom, or why not.
pub fn review(objects: &Objects, key: &TokenKey, body: &Value, now: SystemTime) -> Value {
    let mut answered = body.clone();
    answered["apiVersion"] = "authentication.k8s.io/v1".into();
    answered["kind"] = "TokenReview".into();
    answered["status"] = match reviewed(objects, key, body, now) {
        Ok(status) => status,
        Err(why) => json!({"authenticated": false, "user": {}, "error": why}),
    };
    answered
}

fn reviewed(
    objects: &Objects,
    key: &TokenKey,
    body: &Value,
    now: SystemTime,
) -> Result<Value, String> {
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let claims = key
        .verify(token, now)
        .map_err(|e| format!("invalid bearer token, {e}"))?;
    let token_audiences = if claims.aud.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        claims.aud.clone()
    };
    let wanted = audiences(&body["spec"]["audiences"]);
    let audiences: Vec<&String> = wanted
        .iter()
        .filter(|a| token_audiences.contains(a))
        .collect();
    if audiences.is_empty() {
        return Err(format!(
            "invalid bearer token, token audiences {token_audiences:?} is invalid for the target audiences {wanted:?}"
        ));
    }
    let (ns, sa) = (&claims.ns, &claims.sa);
    let sa_uid =
        uid_of(objects, &ObjectKey::new(Kind::ServiceAccount, ns, sa)).ok_or_else(|| {
            format!("invalid bearer token, service account {ns}/{sa} has been deleted")
        })?;
    let mut extra = json!({});
    if let Some(pod) = &claims.pod {
        match uid_of(objects, &ObjectKey::new(Kind::Pod, ns, &pod.name)) {
            Some(uid) if uid == pod.uid => {}
            Some(_) => {
                return Err(format!(
                    "invalid bearer token, the UID in the bound object reference ({}) does not match the pod {ns}/{}",
                    pod.uid, pod.name
                ))
            }
            None => {
                return Err(format!(
                    "invalid bearer token, pod \"{}\" not found",
                    pod.name
                ))
            }
        }
        extra["authentication.kubernetes.io/pod-name"] = json!([pod.name]);
        extra["authentication.kubernetes.io/pod-uid"] = json!([pod.uid]);
    }
    Ok(json!({
        "authenticated": true,
        "user": {
            "username": format!("system:serviceaccount:{ns}:{sa}"),
            "uid": sa_uid,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "extra": extra,
        },
        "audiences": audiences,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Op;
    use crate::testing::{at, load};

    const OBJECTS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: full}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sleep, namespace: full}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: other, namespace: full}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: sleep-1, namespace: full}\nspec:\n  serviceAccountName: sleep\n  containers: [{name: sleep, image: sleep}]\n";

    fn objects(text: &str) -> Objects {
        let base = Objects::default();
        let mut ops = base.bootstrap_ops();
        ops.extend(
            load("t.yaml", text, "full")
                .into_iter()
                .map(|resource| Op::Apply {
                    origin: "t.yaml".into(),
                    resource,
                }),
        );
        base.plan(ops, at(0)).unwrap().next
    }

    fn token_request(o: &Objects, key: &TokenKey, sa: &str, spec: Value) -> Result<String, String> {
        request(
            o,
            key,
            "full",
            sa,
            &json!({"spec": spec}),
            SystemTime::now(),
        )
        .map(|r| r["status"]["token"].as_str().unwrap().to_string())
        .map_err(|s| s["message"].as_str().unwrap().to_string())
    }

    fn review_of(o: &Objects, key: &TokenKey, token: &str, audiences: &[&str]) -> Value {
        review(
            o,
            key,
            &json!({"spec": {"token": token, "audiences": audiences}}),
            SystemTime::now(),
        )
    }

    #[test]
    fn a_bound_token_reviews_as_its_pod_while_the_pod_lives() {
        let key = TokenKey::from_secret(&[7; 32]);
        let o = objects(OBJECTS);
        let bound = json!({"audiences": ["istio-ca"], "expirationSeconds": 3600, "boundObjectRef": {"kind": "Pod", "name": "sleep-1"}});
        let token = token_request(&o, &key, "sleep", bound.clone()).unwrap();

        let r = review_of(&o, &key, &token, &["istio-ca"]);
        let reviewed = tessera_ca::token_review::read(&r).unwrap();
        assert_eq!(
            (
                reviewed.namespace.as_str(),
                reviewed.service_account.as_str(),
                reviewed.pod.as_str()
            ),
            ("full", "sleep", "sleep-1")
        );

        // Another audience: refused, naming both.
        let r = review_of(
            &o,
            &key,
            &token,
            &["https://kubernetes.default.svc.cluster.local"],
        );
        assert_eq!(r["status"]["authenticated"], false);
        assert!(
            r["status"]["error"]
                .as_str()
                .unwrap()
                .contains("token audiences [\"istio-ca\"] is invalid"),
            "{r}"
        );

        // The pod is deleted: the token no longer authenticates.
        let gone = o
            .plan(
                vec![Op::Delete {
                    key: ObjectKey::new(Kind::Pod, "full", "sleep-1"),
                    ignore_not_found: false,
                }],
                at(1),
            )
            .unwrap()
            .next;
        let r = review_of(&gone, &key, &token, &["istio-ca"]);
        assert_eq!(
            r["status"]["error"],
            "invalid bearer token, pod \"sleep-1\" not found"
        );
        assert!(tessera_ca::token_review::read(&r).is_err());

        // A token of another mesh's key.
        let r = review_of(&o, &TokenKey::from_secret(&[8; 32]), &token, &["istio-ca"]);
        assert_eq!(r["status"]["authenticated"], false);
    }

    #[test]
    fn token_requests_are_refused_for_what_the_api_server_refuses() {
        let key = TokenKey::from_secret(&[7; 32]);
        let o = objects(OBJECTS);
        let bind = |sa: &str, pod: &str| {
            token_request(
                &o,
                &key,
                sa,
                json!({"boundObjectRef": {"kind": "Pod", "name": pod}}),
            )
        };
        // The pod runs as another service account.
        let e = bind("other", "sleep-1").unwrap_err();
        assert!(
            e.contains("runs as service account \"sleep\", not \"other\""),
            "{e}"
        );
        assert!(bind("sleep", "nope")
            .unwrap_err()
            .contains("pods \"nope\" not found"));
        assert_eq!(
            bind("ghost", "sleep-1").unwrap_err(),
            "serviceaccounts \"ghost\" not found"
        );
        let short = token_request(&o, &key, "sleep", json!({"expirationSeconds": 60})).unwrap_err();
        assert!(short.contains("less than 10 minutes"), "{short}");
        // Unbound, no audience: the API server's own audience; no pod in the review.
        let token = token_request(&o, &key, "sleep", json!({})).unwrap();
        let r = review_of(&o, &key, &token, &[]);
        assert_eq!(r["status"]["authenticated"], true, "{r}");
        assert_eq!(
            tessera_ca::token_review::read(&r).unwrap_err(),
            tessera_ca::token_review::ReviewError::WrongAudience(API_AUDIENCE.into())
        );
    }
}
