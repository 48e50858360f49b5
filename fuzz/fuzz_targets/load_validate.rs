//! The manifest loader and validation on any text: every input ends in documents or
//! problems, never a panic, a hang or an unbounded allocation (the fuzzer's RSS limit).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tessera_model::{load_str, LoadOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let report = load_str(Path::new("fuzz.yaml"), text, &LoadOptions::default());
    for problem in &report.problems {
        // Messages quote a bounded part of the input.
        assert!(problem.message.len() < 4096, "{}", problem.message.len());
    }
});
