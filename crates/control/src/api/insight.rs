//! Operator insight: explain, the reachability matrix, analyze and what-if.

use hyper::StatusCode;

use super::routes::{json, read_documents, refused, Reply};
use super::types::*;
use crate::insight;
use crate::objects::Op;
use crate::state::ControlState;

pub(super) fn explain(control: &ControlState, r: ExplainRequest) -> Reply {
    let world = control.current_world();
    let result = insight::find_client(&world, &r.from).and_then(|client| {
        let svc = insight::find_service(&world, &r.to)?;
        insight::explain(&world, client, svc, r.port)
    });
    match result {
        Ok(reach) => json(StatusCode::OK, &reach),
        Err(e) => refused(StatusCode::NOT_FOUND, vec![format!("error: {e}")]),
    }
}

pub(super) fn reachability(control: &ControlState, r: ReachabilityRequest) -> Reply {
    let world = control.current_world();
    let namespaces = if r.namespaces.is_empty() {
        insight::reach::default_namespaces(&world)
    } else {
        r.namespaces
    };
    json(
        StatusCode::OK,
        &ReachabilityResponse {
            revision: world.revision,
            reach: insight::matrix(&world, &namespaces),
            namespaces,
        },
    )
}

/// Analysis of what is stored, or of a change planned on it (never committed).
pub(super) fn analyze(control: &ControlState, r: AnalyzeRequest) -> Reply {
    if r.documents.is_empty() {
        let world = control.current_world();
        return json(
            StatusCode::OK,
            &AnalyzeResponse {
                revision: world.revision,
                findings: insight::analyze(&world),
                what_if: None,
                planned: vec![],
                new_findings: vec![],
            },
        );
    }
    let (resources, errors, _) = read_documents(control, &r.documents, r.namespace);
    if !errors.is_empty() {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    let objects = control.objects();
    let ops: Vec<Op> = resources
        .into_iter()
        .map(|(origin, resource)| Op::Apply { origin, resource })
        .collect();
    let planned = control.admit(&objects, ops).and_then(|ops| {
        insight::plan_change(
            &objects,
            control.options(),
            ops,
            time::OffsetDateTime::now_utc(),
        )
    });
    match planned {
        Ok(p) => json(
            StatusCode::OK,
            &AnalyzeResponse {
                revision: objects.revision(),
                what_if: Some(p.what_if),
                findings: p.findings,
                planned: p.outcomes,
                new_findings: p.new_findings,
            },
        ),
        Err(errors) => refused(StatusCode::CONFLICT, errors),
    }
}
