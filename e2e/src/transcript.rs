//! Comparing what a command printed with what a seed prints. Terminal transcripts mix
//! stdout and stderr (`command terminated with exit code 56` comes from stderr), and
//! the order of those two streams within one step is not fixed, so a transcript is read
//! as blocks separated by blank lines and a block is compared as a set of lines.

use std::collections::BTreeMap;

/// One block: its lines in order; empty blocks are dropped.
pub fn blocks(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(line.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn sorted(lines: &[String]) -> Vec<String> {
    let mut v = lines.to_vec();
    v.sort();
    v
}

/// Compares `actual` with the seed's `expected` block by block. A block whose first line
/// is in `either` (a load-balanced step, like `sleep.full to httpbin.partial`) may show
/// the seed's `URI=` line or not. `Err` shows both transcripts and the first difference.
pub fn matches_seed(actual: &str, expected: &str, either: &[&str]) -> Result<(), String> {
    let a = blocks(actual);
    let e = blocks(expected);
    let explain = |why: String| {
        Err(format!(
            "{why}\n--- the seed prints\n{expected}\n--- we printed\n{actual}"
        ))
    };
    if a.len() != e.len() {
        return explain(format!("{} blocks, the seed has {}", a.len(), e.len()));
    }
    for (i, (ab, eb)) in a.iter().zip(&e).enumerate() {
        let free = eb.first().is_some_and(|t| either.contains(&t.as_str()));
        let strip = |b: &[String]| -> Vec<String> {
            b.iter()
                .filter(|l| !(free && l.starts_with("URI=")))
                .cloned()
                .collect()
        };
        let (ab2, eb2) = if free {
            (strip(ab), strip(eb))
        } else {
            (ab.clone(), eb.clone())
        };
        if sorted(&ab2) != sorted(&eb2) {
            return explain(format!(
                "block {} differs: {ab:?} vs the seed's {eb:?}",
                i + 1
            ));
        }
    }
    Ok(())
}

/// How many blocks of `text` carry each distinct set of lines, e.g. for ten requests to
/// a service with one endpoint behind a sidecar and one without.
pub fn tally(text: &str) -> BTreeMap<Vec<String>, usize> {
    let mut out = BTreeMap::new();
    for b in blocks(text) {
        *out.entry(sorted(&b)).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "sleep.full to httpbin.full\nURI=spiffe://cluster.local/ns/full/sa/sleep\n\
                        response code: 200\n\nsleep.full to httpbin.partial\n\
                        URI=spiffe://cluster.local/ns/full/sa/sleep\nresponse code: 200\n\n\
                        sleep.legacy to httpbin.full\nresponse code: 000\n\
                        command terminated with exit code 56\n\n";

    #[test]
    fn stream_order_within_a_block_does_not_matter() {
        let ours = "sleep.full to httpbin.full\nURI=spiffe://cluster.local/ns/full/sa/sleep\n\
                    response code: 200\n\nsleep.full to httpbin.partial\n\
                    URI=spiffe://cluster.local/ns/full/sa/sleep\nresponse code: 200\n\n\
                    sleep.legacy to httpbin.full\ncommand terminated with exit code 56\n\
                    response code: 000\n";
        assert_eq!(matches_seed(ours, SEED, &[]), Ok(()));
    }

    #[test]
    fn a_missing_identity_is_a_difference_unless_the_step_is_load_balanced() {
        let ours = "sleep.full to httpbin.full\nURI=spiffe://cluster.local/ns/full/sa/sleep\n\
                    response code: 200\n\nsleep.full to httpbin.partial\nresponse code: 200\n\n\
                    sleep.legacy to httpbin.full\nresponse code: 000\n\
                    command terminated with exit code 56\n";
        assert!(matches_seed(ours, SEED, &[]).is_err());
        assert_eq!(
            matches_seed(ours, SEED, &["sleep.full to httpbin.partial"]),
            Ok(())
        );
        let no_uri_on_full = ours.replacen("URI=spiffe://cluster.local/ns/full/sa/sleep\n", "", 1);
        let err = matches_seed(&no_uri_on_full, SEED, &["sleep.full to httpbin.partial"]);
        assert!(err.unwrap_err().contains("block 1 differs"));
    }

    #[test]
    fn a_wrong_code_or_a_missing_exit_line_is_a_difference() {
        let wrong = SEED.replace("response code: 000", "response code: 503");
        assert!(matches_seed(&wrong, SEED, &[]).is_err());
        let no_exit = SEED.replace("command terminated with exit code 56\n", "");
        assert!(matches_seed(&no_exit, SEED, &[]).is_err());
        assert!(matches_seed("", SEED, &[]).is_err());
    }

    #[test]
    fn tally_counts_kinds_of_answers() {
        let t = tally("a\nb\n\nb\n\nb\na\n\n");
        assert_eq!(t.get(&vec!["a".to_string(), "b".to_string()]), Some(&2));
        assert_eq!(t.get(&vec!["b".to_string()]), Some(&1));
    }
}
