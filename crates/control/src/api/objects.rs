//! Objects: apply and create, delete, label, status, as kubectl's verbs do, each a batch
//! of the store's operations (reads go through the Kubernetes API beside this one).

use hyper::StatusCode;

use super::routes::{changed, json, read_documents, refused, target_key, Reply};
use super::types::*;
use crate::objects::{ObjectKey, Op};
use crate::state::ControlState;

pub(super) async fn apply(control: &ControlState, r: ApplyRequest) -> Reply {
    let (resources, errors, warnings) = read_documents(control, &r.documents, r.namespace);
    if !errors.is_empty() {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    if resources.is_empty() {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![format!(
                "error: no objects passed to {}",
                if r.create { "create" } else { "apply" }
            )],
        );
    }
    let ops = resources
        .into_iter()
        .map(|(origin, resource)| {
            if r.create {
                Op::Create { origin, resource }
            } else {
                Op::Apply { origin, resource }
            }
        })
        .collect();
    changed(control.submit(ops).await, warnings)
}

pub(super) async fn delete(control: &ControlState, r: DeleteRequest) -> Reply {
    let (resources, errors, _) = read_documents(control, &r.documents, r.namespace.clone());
    if !errors.is_empty() {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    let mut keys: Vec<ObjectKey> = resources
        .iter()
        .map(|(_, res)| ObjectKey::of(res))
        .collect();
    for t in &r.targets {
        let mut t = t.clone();
        if t.namespace.is_none() {
            t.namespace = r.namespace.clone();
        }
        match target_key(&t) {
            Ok(k) => keys.push(k),
            Err((status, errors)) => return refused(status, errors),
        }
    }
    if keys.is_empty() {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["error: nothing to delete: give -f FILE or KIND NAME".into()],
        );
    }
    // kubectl deletes what it can and reports the rest; a batch here is still one
    // transaction, so the missing ones are reported and the others deleted.
    let mut missing = Vec::new();
    let result = control
        .submit_with(|objects| {
            let (present, absent): (Vec<ObjectKey>, Vec<ObjectKey>) =
                keys.into_iter().partition(|k| objects.get(k).is_some());
            missing = absent;
            present
                .into_iter()
                .map(|key| Op::Delete {
                    key,
                    ignore_not_found: true,
                })
                .collect()
        })
        .await;
    let not_found: Vec<String> = if r.ignore_not_found {
        vec![]
    } else {
        missing
            .iter()
            .map(|k| format!("Error from server (NotFound): {} not found", k.quoted()))
            .collect()
    };
    match result {
        Ok((outcomes, revision)) if not_found.is_empty() => json(
            StatusCode::OK,
            &ChangeResponse {
                outcomes,
                warnings: vec![],
                revision,
            },
        ),
        Ok((outcomes, revision)) => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({
                "outcomes": outcomes,
                "revision": revision,
                "errors": not_found,
            }),
        ),
        Err(errors) => refused(StatusCode::CONFLICT, errors),
    }
}

pub(super) async fn label(control: &ControlState, r: LabelRequest) -> Reply {
    let key = match target_key(&r.target) {
        Ok(k) => k,
        Err((status, errors)) => return refused(status, errors),
    };
    changed(
        control
            .submit(vec![Op::Label {
                key,
                set: r.set,
                remove: r.remove,
                overwrite: r.overwrite,
            }])
            .await,
        vec![],
    )
}

pub(super) async fn status(control: &ControlState, r: StatusRequest) -> Reply {
    let key = match target_key(&r.target) {
        Ok(k) => k,
        Err((status, errors)) => return refused(status, errors),
    };
    changed(
        control
            .submit(vec![Op::Status {
                key,
                status: r.status,
            }])
            .await,
        vec![],
    )
}
