//! A proxy's projected service-account token checked by the Kubernetes API server's
//! TokenReview, as istiod checks it before signing (the token's audience is `istio-ca`):
//! the review to send, and what its answer says — the service account, and the pod the
//! token is bound to — or why the CA refuses, in words an operator can act on. Pure; the
//! request is the caller's.

use serde_json::{json, Value};

/// The audience a proxy's token is projected for.
pub const AUDIENCE: &str = "istio-ca";

/// The key under `status.user.extra` that names the pod a bound token belongs to.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// The TokenReview to create for `token`.
pub fn request(token: &str) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": [AUDIENCE]},
    })
}

/// What a successful review established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub namespace: String,
    pub service_account: String,
    /// The pod the token is bound to.
    pub pod: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the API server does not accept the token: {0}")]
    NotAuthenticated(String),
    #[error("the token is not for audience {AUDIENCE} (it is for {0}); project it with audience {AUDIENCE}")]
    WrongAudience(String),
    #[error("the token is not a service account's (user {0:?})")]
    NotAServiceAccount(String),
    #[error("the token is not bound to a pod: use a projected service-account token, not a legacy Secret token")]
    NotBoundToPod,
}

/// Reads a TokenReview's answer (the whole object, or its `status`).
pub fn read(review: &Value) -> Result<Reviewed, ReviewError> {
    let status = review.get("status").unwrap_or(review);
    if status["authenticated"] != true {
        let why = status["error"]
            .as_str()
            .filter(|e| !e.is_empty())
            .unwrap_or("not authenticated");
        return Err(ReviewError::NotAuthenticated(why.to_string()));
    }
    let audiences: Vec<&str> = status["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !audiences.contains(&AUDIENCE) {
        let listed = if audiences.is_empty() {
            "no audience".to_string()
        } else {
            audiences.join(", ")
        };
        return Err(ReviewError::WrongAudience(listed));
    }
    let user = status["user"]["username"].as_str().unwrap_or("");
    let (namespace, service_account) = match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains(':') => {
            (ns.to_string(), sa.to_string())
        }
        _ => return Err(ReviewError::NotAServiceAccount(user.to_string())),
    };
    let pod = status["user"]["extra"][POD_NAME][0]
        .as_str()
        .filter(|p| !p.is_empty())
        .ok_or(ReviewError::NotBoundToPod)?;
    Ok(Reviewed {
        namespace,
        service_account,
        pod: pod.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(authenticated: bool, user: &str, audiences: &[&str], pod: Option<&str>) -> Value {
        let mut extra = json!({});
        if let Some(p) = pod {
            extra[POD_NAME] = json!([p]);
            extra["authentication.kubernetes.io/pod-uid"] = json!(["d6c2..."]);
        }
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "status": {
                "authenticated": authenticated,
                "user": {"username": user, "uid": "x", "groups": ["system:serviceaccounts"], "extra": extra},
                "audiences": audiences,
            },
        })
    }

    #[test]
    fn reviews_name_the_service_account_and_the_pod_or_why_not() {
        let sa = "system:serviceaccount:full:sleep";
        assert_eq!(
            read(&status(true, sa, &["istio-ca"], Some("sleep-1"))),
            Ok(Reviewed {
                namespace: "full".into(),
                service_account: "sleep".into(),
                pod: "sleep-1".into(),
            })
        );
        let rows: Vec<(Value, &str)> = vec![
            (
                json!({"status": {"authenticated": false, "error": "token has expired"}}),
                "the API server does not accept the token: token has expired",
            ),
            (
                status(true, sa, &["https://kubernetes.default.svc"], Some("p")),
                "the token is not for audience istio-ca (it is for https://kubernetes.default.svc)",
            ),
            (
                status(true, "alice", &["istio-ca"], Some("p")),
                "the token is not a service account's (user \"alice\")",
            ),
            (
                status(true, sa, &["istio-ca"], None),
                "the token is not bound to a pod",
            ),
        ];
        for (review, want) in rows {
            let got = read(&review).unwrap_err().to_string();
            assert!(got.starts_with(want), "{got}");
        }
        assert_eq!(request("t")["spec"]["audiences"], json!(["istio-ca"]));
    }
}
