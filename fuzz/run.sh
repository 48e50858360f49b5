#!/usr/bin/env bash
# Runs each fuzz target for a fixed time and prints one Markdown row per target for
# FUZZING.md (executions, speed, crashes).
#
#   fuzz/run.sh [SECONDS] [TARGET...]      (default 300 s each, every target)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The seed corpus
# is fuzz/corpus/<target>; what the fuzzer grows lands in fuzz/corpus-work/<target>
# (git-ignored, kept between runs). A crash is written to fuzz/artifacts/<target>/ and
# the run of that target stops; turn it into a regression test before fixing it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:-300}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(detect load_validate identity route ca_request kube_body)
WORK=$(mktemp -d /tmp/tessera-fuzz.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cd "$ROOT"
cargo +nightly fuzz build -s none >&2
echo "| date | target | seconds | executions | exec/s | crashes |"
echo "|---|---|---:|---:|---:|---:|"
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus-work/$t" "fuzz/artifacts/$t"
    log="$WORK/$t.log"
    status=0
    # The CA target writes its key files under TMPDIR: a directory removed at the end.
    TMPDIR="$WORK" cargo +nightly fuzz run -s none "$t" "fuzz/corpus-work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
    crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
    echo "| $(date -u +%F) | $t | $SECONDS_EACH | $runs | $speed | $crashes |"
    if [ "$status" -ne 0 ]; then
        echo "$t stopped with status $status; the end of its log:" >&2
        tail -30 "$log" >&2
    fi
done
