#!/usr/bin/env bash
# The cost of AuthorizationPolicy on the data path: instructions per request of the
# Tessera pair on keep-alive, without a policy and with one ALLOW policy of 10 rules on the
# server side (the request matches the last one, so nine are evaluated and fail first),
# counted by callgrind (bench/callgrind.sh) with the same binary.
#
#   bench/authz.sh RUN_DIR [TESSERA_BIN]
#
# RUN_DIR is the `run/` directory of an earlier `bench/run.sh`. Prints both figures and
# their ratio. Loopback only.
set -euo pipefail

RUN=${1:?usage: bench/authz.sh RUN_DIR [TESSERA_BIN]}
BIN=${2:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WITH=$(mktemp -d /tmp/tessera-authz-bench.XXXXXX)
trap 'rm -rf "$WITH"' EXIT
cp -r "$RUN/." "$WITH/"

# Ten rules; the client's identity and the request (GET /) match only the tenth.
{
    echo "authorization:"
    echo "  policies:"
    echo "    - name: full/httpbin-ten-rules"
    echo "      action: ALLOW"
    echo "      rules:"
    for i in $(seq 1 9); do
        echo "        - from: [{principals: [!exact \"cluster.local/ns/other-$i/sa/client\"]}]"
        echo "          to: [{methods: [!exact GET], paths: [!prefix \"/api/v$i/\"]}]"
    done
    echo "        - from: [{namespaces: [!exact full]}]"
    echo "          to: [{methods: [!exact GET, !exact HEAD], paths: [!prefix \"/\"]}]"
} >> "$WITH/tessera-server/config.yaml"

run() { # dir: the last row, or a failure when a proxy did not start
    local out
    out=$(SCENARIO=ka "$ROOT/bench/callgrind.sh" "$1" ${BIN:+"$BIN"} 2>&1)
    if grep -q "nothing listens" <<<"$out"; then
        echo "a proxy did not start with $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    tail -n 1 <<<"$out"
}
without=$(run "$RUN")
with=$(run "$WITH")
echo "without policy: $without"
echo "with 10 rules:  $with"
python3 - "$without" "$with" <<'PY'
import sys
num = lambda row: float(row.strip().strip("|").split("|")[-1])
a, b = num(sys.argv[1]), num(sys.argv[2])
print(f"ratio: {b / a:.4f} ({(b / a - 1) * 100:+.2f} %)")
PY
