//! `analyze --what-if`: the reachability matrix now and with a change applied, compared
//! per client → endpoint hop, before anything is stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::insight::analyze::{analyze, Finding};
use crate::insight::reach::{matrix, EndpointReach, PortReach};
use crate::insight::verdict::Verdict;
use crate::objects::{Objects, Op, Outcome};
use crate::policy::MeshOptions;
use crate::world::World;

/// One hop whose verdict a change would alter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `pod.namespace`.
    pub client: String,
    /// `httpbin.full:8000`.
    pub target: String,
    /// The endpoint's `pod.namespace`.
    pub endpoint: String,
    pub before: Verdict,
    pub after: Verdict,
    /// Why it would be so, and what decided it, after the change.
    pub why: String,
    pub decided_by: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatIf {
    /// Working hops that would fail.
    pub breaks: Vec<Change>,
    /// Failing hops that would work.
    pub fixes: Vec<Change>,
    /// Working hops that would keep working with other security (mTLS ↔ plaintext).
    pub changes: Vec<Change>,
    /// Hops compared (present before and after).
    pub compared: usize,
}

impl WhatIf {
    pub fn breaks_anything(&self) -> bool {
        !self.breaks.is_empty()
    }
}

type HopKey = (String, String, u16, String);

fn hops(reach: &[PortReach]) -> BTreeMap<HopKey, (&PortReach, &EndpointReach)> {
    reach
        .iter()
        .flat_map(|p| {
            p.endpoints.iter().map(move |e| {
                (
                    (
                        p.client.clone(),
                        p.service.clone(),
                        p.port,
                        e.workload.clone(),
                    ),
                    (p, e),
                )
            })
        })
        .collect()
}

/// Compares every hop of `namespaces` (all but the mesh's own when empty).
pub fn what_if(before: &World, after: &World, namespaces: &[String]) -> WhatIf {
    let now = matrix(before, namespaces);
    let next = matrix(after, namespaces);
    let now = hops(&now);
    let next = hops(&next);
    let mut out = WhatIf::default();
    for (key, (port, was)) in &now {
        let Some((_, will)) = next.get(key) else {
            continue;
        };
        out.compared += 1;
        if was.verdict == will.verdict {
            continue;
        }
        let change = Change {
            client: port.client.clone(),
            target: port.target(),
            endpoint: will.workload.clone(),
            before: was.verdict,
            after: will.verdict,
            why: will.why.clone(),
            decided_by: will.decided_by.clone(),
            fix: will.fix.clone(),
        };
        match (was.verdict.works(), will.verdict.works()) {
            (true, false) => out.breaks.push(change),
            (false, true) => out.fixes.push(change),
            _ => out.changes.push(change),
        }
    }
    out
}

/// A change planned on the stored objects and never committed.
#[derive(Debug, Clone)]
pub struct PlannedChange {
    /// What it would create, update or delete.
    pub outcomes: Vec<Outcome>,
    /// The hops it would break, fix or downgrade.
    pub what_if: WhatIf,
    /// The findings of the mesh after the change.
    pub findings: Vec<Finding>,
    /// Those it would add.
    pub new_findings: Vec<Finding>,
}

/// `ops` planned on `objects` (as an apply would, at `now`), the world before and after
/// built from the objects as they stand (not the debounced world), and compared.
pub fn plan_change(
    objects: &Objects,
    options: &MeshOptions,
    ops: Vec<Op>,
    now: time::OffsetDateTime,
) -> Result<PlannedChange, Vec<String>> {
    let plan = objects.plan(ops, now)?;
    let before = World::build(objects, options);
    let after = World::build(&plan.next, options);
    let findings = analyze(&before);
    let after_findings = analyze(&after);
    let new_findings = after_findings
        .iter()
        .filter(|f| !findings.contains(f))
        .cloned()
        .collect();
    Ok(PlannedChange {
        outcomes: plan.outcomes,
        what_if: what_if(&before, &after, &[]),
        findings: after_findings,
        new_findings,
    })
}
