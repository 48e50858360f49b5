//! `tessera validate -f FILE|DIR|-`: prints every problem, one per line, then a summary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tessera_model::{load_paths, LoadOptions};

#[derive(Args)]
pub struct ValidateArgs {
    /// A manifest file, a directory (read recursively) or - for standard input; repeatable
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    files: Vec<PathBuf>,
}

/// `namespace`: the global -n, for objects that name none.
pub fn run(args: &ValidateArgs, namespace: Option<String>) -> ExitCode {
    let opts = LoadOptions {
        namespace,
        ..LoadOptions::default()
    };
    let report = load_paths(&args.files, &opts);
    for problem in &report.problems {
        println!("{problem}");
    }
    let errors = report.errors().count();
    let warnings = report.problems.len() - errors;
    let files: std::collections::BTreeSet<_> = report
        .documents
        .iter()
        .map(|d| &d.origin.file)
        .chain(report.problems.iter().map(|p| &p.file))
        .collect();
    let summary = format!(
        "{} document{} in {} file{}: {} error{}, {} warning{}",
        report.documents.len(),
        plural(report.documents.len()),
        files.len(),
        plural(files.len()),
        errors,
        plural(errors),
        warnings,
        plural(warnings)
    );
    if errors > 0 {
        eprintln!("{summary}");
        ExitCode::FAILURE
    } else {
        println!("{summary}");
        ExitCode::SUCCESS
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
