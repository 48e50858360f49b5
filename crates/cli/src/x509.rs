//! `tessera x509 describe FILE`: the certificates of a PEM file, one row each.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tessera_ca::inspect::{describe_pem, rfc3339};

use crate::table::Table;

#[derive(Subcommand)]
pub enum X509Command {
    /// Print each certificate of a PEM file: type, serial, validity, days left, SANs,
    /// subject and issuer
    Describe {
        /// A PEM file (a chain or a bundle), or - for standard input
        file: PathBuf,
    },
}

pub fn run(cmd: &X509Command) -> ExitCode {
    let X509Command::Describe { file } = cmd;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tessera x509 describe: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let rows = match describe_pem(&text, time::OffsetDateTime::now_utc()) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("tessera x509 describe: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let mut table = Table::new(&[
        "TYPE",
        "SERIAL NUMBER",
        "NOT BEFORE",
        "NOT AFTER",
        "DAYS LEFT",
        "SANS",
        "SUBJECT",
        "ISSUER",
    ]);
    for r in rows {
        table.row(vec![
            r.kind.to_string(),
            r.serial,
            rfc3339(r.not_before),
            rfc3339(r.not_after),
            r.days_left.to_string(),
            if r.sans.is_empty() {
                "-".into()
            } else {
                r.sans.join(",")
            },
            if r.subject.is_empty() {
                "-".into()
            } else {
                r.subject
            },
            r.issuer,
        ]);
    }
    print!("{table}");
    ExitCode::SUCCESS
}
