//! Table tests of validation rules: each case is a `spec` written as YAML, the kind it
//! belongs to, and the exact `severity: path: message` lines a person sees (none when the
//! object is accepted).

use std::path::Path;

use tessera_model::{load_str, LoadOptions};

/// A `(case name, spec YAML, expected lines)` row.
pub type Case<'a> = (&'a str, &'a str, &'a [&'a str]);

/// The problems of one object of `kind` with `spec`, as `severity: path: message`.
pub fn problems(api_version: &str, kind: &str, spec: &str) -> Vec<String> {
    let spec: String = spec
        .trim_matches('\n')
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    let text = format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: t, namespace: default}}\nspec:\n{spec}"
    );
    let report = load_str(Path::new("t.yaml"), &text, &LoadOptions::default());
    report
        .problems
        .iter()
        .map(|p| format!("{}: {}: {}", p.severity, p.path, p.message))
        .collect()
}

/// Runs every case and reports all the ones that differ at once.
pub fn run(api_version: &str, kind: &str, cases: &[Case]) {
    let mut failures = Vec::new();
    for (name, spec, expected) in cases {
        let got = problems(api_version, kind, spec);
        if got != *expected {
            failures.push(format!("{name}:\n  expected {expected:#?}\n  got {got:#?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
