#!/usr/bin/env bash
# Proxy memory under idle connections: a sidecar (inbound, PERMISSIVE HTTP) with N idle
# client connections held open, its resident memory before, while they are held (past
# protocol detection, each waiting in the HTTP server for a request head), and once the
# header read timeout closed them; a legitimate request is answered while they are held.
#
#   bench/idle.sh [TESSERA_BIN] [N]     (default target/release/tessera, 10000)
#
# Loopback only. Prints a Markdown table.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tessera}
N=${2:-10000}
HEADER_TIMEOUT_MS=${HEADER_TIMEOUT_MS:-6000}
WORK=$(mktemp -d /tmp/tessera-idle.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

"$BIN" --state-dir "$WORK/state" ca init >/dev/null
"$BIN" --state-dir "$WORK/state" ca issue --identity spiffe://cluster.local/ns/bench/sa/server \
    --out "$WORK/certs" >/dev/null
APP=$(free_port) INBOUND=$(free_port) ADMIN=$(free_port)
python3 - "$APP" <<'EOF' &
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(128)
while True:
    c, _ = l.accept(); c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"); c.close()
EOF
PIDS+=($!)
cat > "$WORK/proxy.yaml" <<EOF
version: "1"
node: {id: server.bench, identity: "spiffe://cluster.local/ns/bench/sa/server"}
certificates:
  files: {certChain: $WORK/certs/cert-chain.pem, privateKey: $WORK/certs/key.pem, rootCert: $WORK/certs/root-cert.pem}
admin: {address: "127.0.0.1:$ADMIN"}
runtime:
  threads: 1
  accessLog: false
  protocolDetectionMs: 200
  limits: {headerReadTimeoutMs: $HEADER_TIMEOUT_MS}
listeners:
  explicit: [{name: inbound, bind: "127.0.0.1:$INBOUND", inbound: $APP}]
inbound:
  ports: [{port: $APP, protocol: HTTP, mode: PERMISSIVE}]
EOF
"$BIN" proxy --config "$WORK/proxy.yaml" 2>"$WORK/proxy.log" &
PROXY=$!
PIDS+=($PROXY)
for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$INBOUND/")" = 200 ] && break
    sleep 0.1
done
before=$(rss_kib "$PROXY")

# Hold N idle connections; report when they are all open, then wait for the timeout.
python3 - "$INBOUND" "$N" "$WORK/held" <<'EOF' &
import resource, socket, sys, time
port, n, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
open(flag, "w").close()
closed = 0
for s in socks:
    s.settimeout(30)
    try:
        if s.recv(1) == b"":
            closed += 1
    except ConnectionResetError:
        closed += 1
    except socket.timeout:
        pass
print(closed, file=open(flag + ".closed", "w"))
EOF
HOLDER=$!
PIDS+=($HOLDER)
while [ ! -e "$WORK/held" ]; do sleep 0.1; done
sleep 1 # past protocol detection
held=$(rss_kib "$PROXY")
served=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$INBOUND/")
wait "$HOLDER"
closed=$(cat "$WORK/held.closed")
after=$(rss_kib "$PROXY")
timeouts=$(curl -s "http://127.0.0.1:$ADMIN/stats/prometheus" |
    awk '/^tessera_limits_total\{reason="header_timeout"\}/ {print $2}')
lines=$(grep -c 'header_timeout' "$WORK/proxy.log" || true)

echo "| idle connections | RSS before | RSS while held | per connection | request while held | closed by the header timeout | header_timeout count | log lines | RSS after |"
echo "|---:|---:|---:|---:|---|---:|---:|---:|---:|"
echo "| $N | $((before / 1024)) MiB | $((held / 1024)) MiB | $(((held - before) * 1024 / N)) B | $served | $closed | $timeouts | $lines | $((after / 1024)) MiB |"
