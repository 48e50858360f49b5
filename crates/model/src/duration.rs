//! Durations as Istio and Go write them: `10s`, `1.5s`, `500ms`, `1h30m`. One checked parser
//! for every place that reads one (route timeouts, certificate lifetimes, `--ttl`), so huge
//! or odd input is an error and never a crash.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a sequence of `<number><unit>` parts, units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`;
/// numbers may have a fraction. `None` on syntax errors, a missing unit or overflow.
pub fn parse(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "h" => 3600 * NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "s" => NANOS_PER_SEC,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        total = total.checked_add(scaled(num, unit_nanos)?)?;
        rest = next;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, (total % NANOS_PER_SEC) as u32))
}

/// `int[.frac]` times `unit_nanos`, in integers (fractions finer than a nanosecond drop).
fn scaled(num: &str, unit_nanos: u128) -> Option<u128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for d in frac.chars() {
        scale /= 10;
        value = value.checked_add(u128::from(d.to_digit(10)?) * scale)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_istio_writes() {
        for (text, want) in [
            ("10s", Duration::from_secs(10)),
            ("1.5s", Duration::from_millis(1500)),
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("24h", Duration::from_secs(86400)),
            ("0.25h", Duration::from_secs(900)),
            ("250us", Duration::from_micros(250)),
        ] {
            assert_eq!(parse(text), Some(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_none_never_a_panic() {
        for text in [
            "",
            "10",
            "1h30",
            "h",
            "s10",
            "1.2.3s",
            "10 s",
            "10x",
            ".s",
            "99999999999999999999999h",
            "1e9s",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
