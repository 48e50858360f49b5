#!/usr/bin/env bash
# Instructions per request of the Tessera pair (client side + server side), counted by
# callgrind: repeatable for the same binary and load, whatever else the machine does.
#
#   bench/callgrind.sh RUN_DIR [TESSERA_BIN...]
#
# RUN_DIR is the `run/` directory of an earlier `bench/run.sh` (it holds the rendered
# configs, certificates and the app's nginx.conf). Each binary (default: target/release/
# tessera) runs the pair under `valgrind --tool=callgrind` twice, with N1 and then N2
# requests from tessera-loadgen; (I(N2) - I(N1)) / (N2 - N1) is the cost of one request
# with start-up, certificate loading and shutdown taken out. SCENARIO=ka (keep-alive, 8
# connections) or close (a new downstream connection per request). Loopback only.
set -euo pipefail

RUN=${1:?usage: bench/callgrind.sh RUN_DIR [TESSERA_BIN...]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("${CARGO_TARGET_DIR:-$ROOT/target}/release/tessera")
LOADGEN=${LOADGEN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tessera-loadgen}
SCENARIO=${SCENARIO:-ka}
N1=${N1:-500}
N2=${N2:-2500}
RATE=${RATE:-250}

port_of() { # the listener port of a rendered config (`bind: "127.0.0.1:PORT"`)
    grep -m1 'bind:' "$1" | grep -o '127\.0\.0\.1:[0-9]*' | cut -d: -f2
}
CLIENT_PORT=$(port_of "$RUN/tessera-client/config.yaml")
SERVER_PORT=$(port_of "$RUN/tessera-server/config.yaml")

WORK=$(mktemp -d /tmp/tessera-callgrind.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() { # port
    for _ in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

cp -r "$RUN/app" "$WORK/app"
nginx -p "$WORK/app" -e "$WORK/app/error.log" -c "$WORK/app/nginx.conf" &
PIDS+=($!)

# Total instructions of both proxies for `n` requests.
instructions() { # bin n
    local bin=$1 n=$2 out=$WORK/cg-$RANDOM close=()
    mkdir -p "$out"
    [ "$SCENARIO" = close ] && close=(--close)
    valgrind --tool=callgrind --callgrind-out-file="$out/server.out" "$bin" proxy --config "$RUN/tessera-server/config.yaml" >/dev/null 2>&1 &
    local server=$!
    valgrind --tool=callgrind --callgrind-out-file="$out/client.out" "$bin" proxy --config "$RUN/tessera-client/config.yaml" >/dev/null 2>&1 &
    local client=$!
    wait_port "$SERVER_PORT"
    wait_port "$CLIENT_PORT"
    # Under valgrind a first request (connection and mTLS handshake) takes seconds.
    "$LOADGEN" --rate "$RATE" --duration "$(awk "BEGIN{print $n/$RATE}")" --connections 8 --timeout 20 "${close[@]}" \
        "http://127.0.0.1:$CLIENT_PORT/" >/dev/null
    kill -TERM "$client" "$server"
    wait "$client" "$server" 2>/dev/null || true
    local total=0
    for f in "$out/server.out" "$out/client.out"; do
        total=$((total + $(grep -m1 '^summary:' "$f" | awk '{print $2}')))
    done
    echo "$total"
}

echo "| binary | scenario | requests | instructions per request (both proxies) |"
echo "|---|---|---:|---:|"
for bin in "${BINS[@]}"; do
    a=$(instructions "$bin" "$N1")
    b=$(instructions "$bin" "$N2")
    echo "| $bin | $SCENARIO | $N1 → $N2 | $(( (b - a) / (N2 - N1) )) |"
done
