//! Writes through the Kubernetes API: create (POST), replace (PUT), JSON merge patch and
//! JSON patch (PATCH), delete. Each one reads the object with the loader and validation of
//! `tessera apply` and changes the store with the same operations, so that nothing is
//! half-applied and the errors are the ones `tessera validate` gives.

use std::path::Path;

use serde_json::{json, Value};
use tessera_model::resource::{api_version, Kind, ObjectKey, Resource};

use super::answer;
use super::fields;
use super::patch::{json_patch, merge_patch, strategic_merge_patch};
use super::path::ObjectPath;
use super::watch::Selection;
use crate::api::routes::load_options;
use crate::objects::Op;
use crate::state::ControlState;

/// A write's answer: the status code and body.
pub type Answer = (u16, Value);

/// The API server's reason and code for an error the store gave
/// (`Error from server (AlreadyExists): ...`).
pub fn store_error(errors: &[String]) -> Answer {
    let first = errors
        .first()
        .map(String::as_str)
        .unwrap_or("the change was refused");
    let (reason, message) = first
        .strip_prefix("Error from server (")
        .and_then(|rest| rest.split_once("): "))
        .unwrap_or(("Invalid", first));
    let code = match reason {
        "NotFound" => 404,
        "AlreadyExists" | "Conflict" => 409,
        "BadRequest" => 400,
        "Forbidden" => 403,
        _ => 422,
    };
    // The store names where an object came from; here that is the request itself.
    let message = if errors.len() > 1 {
        errors.join("; ")
    } else {
        message.to_string()
    };
    let message = message
        .strip_prefix("error when creating \"request body\": ")
        .unwrap_or(&message)
        .to_string();
    let reason = if code == 422 { "Invalid" } else { reason };
    (code, answer::status(code, reason, &message, None))
}

fn bad_request(message: &str) -> Answer {
    (400, answer::status(400, "BadRequest", message, None))
}

/// Reads one object of the path's kind from a request body (JSON or YAML) with the
/// loader's validation; the namespace comes from the path.
fn read_object(control: &ControlState, o: &ObjectPath, body: &[u8]) -> Result<Resource, Answer> {
    let text = std::str::from_utf8(body).map_err(|_| bad_request("the body is not UTF-8"))?;
    let opts = load_options(control, o.namespace.clone());
    let report = tessera_model::load_str(Path::new("request body"), text, &opts);
    let errors: Vec<&tessera_model::Problem> =
        report.problems.iter().filter(|p| p.is_error()).collect();
    if !errors.is_empty() {
        return Err(invalid(o, text, &errors));
    }
    let mut docs = report.documents.into_iter();
    let (Some(doc), None) = (docs.next(), docs.next()) else {
        return Err(bad_request("the body must hold exactly one object"));
    };
    if doc.resource.kind() != o.info.kind {
        return Err(bad_request(&format!(
            "the body is a {}, the path names {}",
            doc.resource.kind(),
            answer::resource_name(o.info)
        )));
    }
    if let Some(name) = &o.name {
        if doc.resource.name() != name {
            return Err(bad_request(&format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                doc.resource.name()
            )));
        }
    }
    Ok(doc.resource)
}

/// 422 Invalid as the API server words it, which kubectl prints as
/// `The Kind "name" is invalid: field: message`: the kind and name of the object (as far
/// as the body says), and one cause per problem, with its field path.
fn invalid(o: &ObjectPath, body: &str, problems: &[&tessera_model::Problem]) -> Answer {
    let name = serde_norway::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string))
        .unwrap_or_default();
    let causes: Vec<Value> = problems
        .iter()
        .map(|p| {
            // kubectl sends JSON on one line: the field path says where, not the line.
            let mut message = p.message.clone();
            if let Some(hint) = &p.hint {
                message.push_str(&format!("; {hint}"));
            }
            serde_json::json!({"reason": "FieldValueInvalid", "message": message, "field": p.path.to_string()})
        })
        .collect();
    let listed: Vec<String> = causes
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c["field"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    let message = format!(
        "{} \"{name}\" is invalid: {}",
        o.info.name,
        listed.join(", ")
    );
    let details = serde_json::json!({"name": name, "group": o.info.group, "kind": o.info.name, "causes": causes});
    (422, answer::status(422, "Invalid", &message, Some(details)))
}

fn key_of(o: &ObjectPath, name: &str) -> ObjectKey {
    ObjectKey::new(o.info.kind, o.namespace.as_deref().unwrap_or(""), name)
}

/// The stored object at the path's version, as GET returns it.
pub fn stored_json(control: &ControlState, o: &ObjectPath, key: &ObjectKey) -> Option<Value> {
    control
        .objects()
        .get(key)
        .map(|s| answer::served(o.info, &o.version, s))
}

fn dry_run(query: Option<&str>) -> bool {
    tessera_contract::urlencoded::parse(query.unwrap_or(""))
        .get("dryRun")
        .is_some_and(|v| v.iter().any(|d| d == "All"))
}

/// A write request's context: its query and the field manager it writes as.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub query: Option<&'a str>,
    /// `fieldManager`, or (as the API server does) the client's User-Agent up to `/`.
    pub manager: String,
    /// `fieldManager` was given (server-side apply requires it).
    pub manager_named: bool,
}

impl<'a> Call<'a> {
    pub fn new(query: Option<&'a str>, user_agent: &str) -> Call<'a> {
        let params = tessera_contract::urlencoded::parse(query.unwrap_or(""));
        let named = params.get("fieldManager").and_then(|v| v.first()).cloned();
        let agent = user_agent.split('/').next().unwrap_or("").trim();
        Call {
            query,
            manager_named: named.is_some(),
            manager: named
                .unwrap_or_else(|| if agent.is_empty() { "unknown" } else { agent }.to_string()),
        }
    }

    fn flag(&self, name: &str) -> bool {
        tessera_contract::urlencoded::parse(self.query.unwrap_or(""))
            .get(name)
            .is_some_and(|v| v.iter().any(|f| f == "true"))
    }
}

/// Who owns the fields of a written object.
enum Ownership {
    /// An update by the call's manager (create, replace, patch): it takes what it changes.
    Update,
    /// Decided already (server-side apply).
    Given(Vec<fields::Manager>),
}

fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Writes `resource` (a create, or a create-or-update) unless this is a dry run, with
/// its field managers; `code` and the object as stored, or the store's refusal.
async fn commit(
    control: &ControlState,
    o: &ObjectPath,
    mut resource: Resource,
    create: bool,
    call: &Call<'_>,
    ownership: Ownership,
    code: u16,
) -> Answer {
    let key = ObjectKey::of(&resource);
    let old = stored_json(control, o, &key);
    let before = old.as_ref().map(fields::managers).unwrap_or_default();
    let managers = match ownership {
        Ownership::Given(m) => m,
        Ownership::Update => {
            let new = answer::at_version(o.info, &o.version, resource.to_json());
            let time = now();
            let api_version = api_version(o.info.group, &o.version);
            let writer = fields::Writer {
                manager: &call.manager,
                api_version: &api_version,
                time: &time,
            };
            fields::after_update(&before, old.as_ref(), &new, &writer)
        }
    };
    // Nothing changed for anyone: the object is left as it was (no new time stamps).
    let unchanged = old.is_some() && before == managers;
    resource.metadata_mut().managed_fields = if unchanged {
        old.as_ref()
            .map(|old| old["metadata"]["managedFields"].clone())
    } else {
        Some(fields::managed_fields(&managers))
    };
    if dry_run(call.query) {
        return (
            code,
            answer::at_version(o.info, &o.version, resource.to_json()),
        );
    }
    let origin = "request body".to_string();
    let op = if create {
        Op::Create { origin, resource }
    } else {
        Op::Update { origin, resource }
    };
    match control.submit(vec![op]).await {
        Ok(_) => match stored_json(control, o, &key) {
            Some(v) => (code, v),
            // Deleted again before it could be read back.
            None => (404, answer::not_found(o.info, &key.name)),
        },
        Err(errors) => store_error(&errors),
    }
}

/// POST to a collection: 201 and the object, 409 if it exists.
pub async fn create(
    control: &ControlState,
    o: &ObjectPath,
    body: &[u8],
    call: &Call<'_>,
) -> Answer {
    match read_object(control, o, body) {
        Ok(resource) => commit(control, o, resource, true, call, Ownership::Update, 201).await,
        Err(a) => a,
    }
}

/// PUT of a whole object: 200 and the object; 404 if it does not exist, 409 if the
/// body's `resourceVersion` is not the stored one.
pub async fn replace(
    control: &ControlState,
    o: &ObjectPath,
    body: &[u8],
    call: &Call<'_>,
) -> Answer {
    let Some(name) = &o.name else {
        return (
            405,
            answer::status(405, "MethodNotAllowed", "PUT needs an object's name", None),
        );
    };
    let key = key_of(o, name);
    let Some(current) = control.objects().get(&key).map(|s| s.resource_version) else {
        return (404, answer::not_found(o.info, name));
    };
    let resource = match read_object(control, o, body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    if let Some(rv) = &resource.metadata().resource_version {
        if rv != &current.to_string() {
            let message = format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                answer::resource_name(o.info)
            );
            return (409, answer::status(409, "Conflict", &message, None));
        }
    }
    commit(control, o, resource, false, call, Ownership::Update, 200).await
}

/// PATCH: a JSON merge patch (RFC 7386), a strategic merge patch or a JSON patch (RFC
/// 6902) on the stored object, written as a PUT would write it; or a server-side apply.
pub async fn patch(
    control: &ControlState,
    o: &ObjectPath,
    content_type: &str,
    body: &[u8],
    call: &Call<'_>,
) -> Answer {
    let Some(name) = &o.name else {
        return (
            405,
            answer::status(
                405,
                "MethodNotAllowed",
                "PATCH needs an object's name",
                None,
            ),
        );
    };
    let key = key_of(o, name);
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media == "application/apply-patch+yaml" {
        return server_side_apply(control, o, &key, body, call).await;
    }
    let Some(mut current) = stored_json(control, o, &key) else {
        return (404, answer::not_found(o.info, name));
    };
    if let Err(refused) = apply_patch(&mut current, media, body) {
        return refused;
    }
    // The patched object is written whole; what the store owns is not the client's.
    if let Some(meta) = current["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    let body = serde_json::to_vec(&current).unwrap_or_default();
    replace(control, o, &body, call).await
}

/// A patch of `media` type on `current`.
fn apply_patch(current: &mut Value, media: &str, body: &[u8]) -> Result<(), Answer> {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return Err(bad_request("the patch is not JSON"));
    };
    match media {
        "application/merge-patch+json" => merge_patch(current, &patch),
        "application/strategic-merge-patch+json" => strategic_merge_patch(current, &patch),
        "application/json-patch+json" => {
            json_patch(current, &patch).map_err(|e| (422, answer::status(422, "Invalid", &e, None)))?
        }
        other => {
            return Err((
                415,
                answer::status(
                    415,
                    "UnsupportedMediaType",
                    &format!("the patch type {other:?} is not supported; use application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json or application/apply-patch+yaml"),
                    None,
                ),
            ))
        }
    }
    Ok(())
}

/// A write of the `status` subresource (PUT of the object, or a patch of it): only the
/// status changes, as the runtime's reports change it; the rest of the body is ignored.
pub async fn write_status(
    control: &ControlState,
    o: &ObjectPath,
    content_type: Option<&str>,
    body: &[u8],
    call: &Call<'_>,
) -> Answer {
    let Some(name) = &o.name else {
        return (
            405,
            answer::status(
                405,
                "MethodNotAllowed",
                "status is written on an object",
                None,
            ),
        );
    };
    let key = key_of(o, name);
    let Some(mut current) = stored_json(control, o, &key) else {
        return (404, answer::not_found(o.info, name));
    };
    match content_type {
        Some(media) => {
            let media = media.split(';').next().unwrap_or("").trim();
            if let Err(refused) = apply_patch(&mut current, media, body) {
                return refused;
            }
        }
        None => match serde_json::from_slice::<Value>(body) {
            Ok(v) => current = v,
            Err(_) => return bad_request("the body is not JSON"),
        },
    }
    let status = current.get("status").cloned().unwrap_or(json!({}));
    if dry_run(call.query) {
        return (200, current);
    }
    match control
        .submit(vec![Op::Status {
            key: key.clone(),
            status,
        }])
        .await
    {
        Ok(_) => match stored_json(control, o, &key) {
            Some(v) => (200, v),
            None => (404, answer::not_found(o.info, name)),
        },
        Err(errors) => store_error(&errors),
    }
}

/// Server-side apply: the manager owns exactly the fields of its configuration. It
/// conflicts (409) with another manager's field it would change, unless `force=true`;
/// fields it applied before and no longer names, and no one else owns, are removed.
async fn server_side_apply(
    control: &ControlState,
    o: &ObjectPath,
    key: &ObjectKey,
    body: &[u8],
    call: &Call<'_>,
) -> Answer {
    if !call.manager_named {
        return bad_request("PATCH requests with apply content type must have a fieldManager");
    }
    let Some(applied) = std::str::from_utf8(body)
        .ok()
        .and_then(|t| serde_norway::from_str::<Value>(t).ok())
    else {
        return bad_request("the applied configuration is not YAML or JSON");
    };
    let current = stored_json(control, o, key).unwrap_or_else(|| json!({}));
    let managers = fields::managers(&current);
    let (time, api_version) = (now(), api_version(o.info.group, &o.version));
    let writer = fields::Writer {
        manager: &call.manager,
        api_version: &api_version,
        time: &time,
    };
    let (mut object, owners) =
        match fields::apply(&managers, &current, &applied, &writer, call.flag("force")) {
            Ok(done) => done,
            Err(conflicts) => return (409, conflict(&conflicts)),
        };
    let create = current.get("metadata").is_none();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    let body = serde_json::to_vec(&object).unwrap_or_default();
    let resource = match read_object(control, o, &body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let code = if create { 201 } else { 200 };
    commit(
        control,
        o,
        resource,
        create,
        call,
        Ownership::Given(owners),
        code,
    )
    .await
}

/// 409 for an apply's conflicts, as the API server words it.
fn conflict(conflicts: &[fields::Conflict]) -> Value {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {:?} using {}", c.manager, c.api_version),
                "field": fields::display(&c.field),
            })
        })
        .collect();
    let listed: Vec<String> = causes
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c["message"].as_str().unwrap_or(""),
                c["field"].as_str().unwrap_or("")
            )
        })
        .collect();
    let noun = if conflicts.len() == 1 {
        "conflict"
    } else {
        "conflicts"
    };
    let message = format!(
        "Apply failed with {} {noun}: {}",
        conflicts.len(),
        listed.join("\n")
    );
    answer::status(409, "Conflict", &message, Some(json!({"causes": causes})))
}

/// DELETE of one object: 200 and the object as it was (a namespace goes with its objects).
pub async fn delete(control: &ControlState, o: &ObjectPath, query: Option<&str>) -> Answer {
    let Some(name) = &o.name else {
        let message = "a collection is deleted with its selectors";
        return (405, answer::status(405, "MethodNotAllowed", message, None));
    };
    let key = key_of(o, name);
    let Some(before) = stored_json(control, o, &key) else {
        return (404, answer::not_found(o.info, name));
    };
    if dry_run(query) {
        return (200, before);
    }
    let op = Op::Delete {
        key,
        ignore_not_found: false,
    };
    match control.submit(vec![op]).await {
        Ok(_) if o.info.kind == Kind::Namespace => {
            let mut ns = before;
            ns["status"]["phase"] = "Terminating".into();
            (200, ns)
        }
        Ok(_) => (200, before),
        Err(errors) => store_error(&errors),
    }
}

/// DELETE of a collection (deletecollection): every object the selectors pick, in one
/// change of the store (all or none), answered with the list of them as they were.
pub async fn delete_collection(
    control: &ControlState,
    selection: &Selection,
    query: Option<&str>,
) -> Answer {
    let o = &selection.object;
    let objects = control.objects();
    let (keys, items): (Vec<ObjectKey>, Vec<Value>) = selection
        .selected(&objects)
        .map(|(s, v)| (ObjectKey::of(&s.resource), v))
        .unzip();
    let list = answer::list(o.info, &o.version, items, objects.revision());
    if dry_run(query) || keys.is_empty() {
        return (200, list);
    }
    let ops = keys
        .into_iter()
        .map(|key| Op::Delete {
            key,
            ignore_not_found: true,
        })
        .collect();
    match control.submit(ops).await {
        Ok(_) => (200, list),
        Err(errors) => store_error(&errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_their_reason() {
        let (code, s) = store_error(&[
            "Error from server (AlreadyExists): namespaces \"x\" already exists".into(),
        ]);
        assert_eq!(code, 409);
        assert_eq!(s["reason"], "AlreadyExists");
        assert_eq!(s["message"], "namespaces \"x\" already exists");
        let (code, s) = store_error(&["Error from server (NotFound): pods \"p\" not found".into()]);
        assert_eq!((code, s["reason"].as_str()), (404, Some("NotFound")));
        let (code, s) = store_error(&["a.yaml:3: spec.mtls.mode: bad".into()]);
        assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")));
    }
}
