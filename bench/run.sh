#!/usr/bin/env bash
# Tessera's data-path benchmark: direct, Tessera, HAProxy and nginx mTLS pairs, in one run, on
# loopback only. See bench/README.md for the method and the columns.
#
#   bench/run.sh                                   # full default run (~16 min)
#   REPEATS=1 DURATION=3 CONFIGS="direct haproxy nginx" bench/run.sh    # smoke run
#
# Knobs (environment):
#   DURATION   seconds per measurement (default 10)       REPEATS   interleaved repeats (3)
#   CONFIGS    "direct tessera haproxy nginx"              THREADS   workers per proxy (1)
#   SCENARIOS  "ka-c50 ka16k-c50 ka-c1 close-c50 rate-ka rate-close"
#   WARMUP     seconds of unmeasured load after a config starts (2)
#   MAX_RETRIES  re-measurements of a contended run (3)    FOREIGN_MAX_CORES  contention limit (0.1)
#   IDLE_MAX_BUSY  % busy that counts as idle (10)         IDLE_TIMEOUT  seconds to wait for idle (60)
#   RATE_KA RATE_KA_CONNS RATE_CLOSE RATE_CLOSE_CONNS   fixed-rate scenarios (1000/8, 250/8)
#   NO_BUILD=1  use the binaries as they are (no cargo build)
#
# Output: the summary table on stdout and in bench/results/<stamp>/summary.md; every run in
# runs.tsv, discarded contended attempts in contended.tsv, versions and negotiated TLS in
# env.txt, progress in run.log, raw tool output in raw/, configs and logs in run/.
set -Eeuo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
CONFIGS=${CONFIGS:-direct tessera haproxy nginx}
SCENARIOS=${SCENARIOS:-ka-c50 ka16k-c50 ka-c1 close-c50 rate-ka rate-close}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2}
MAX_RETRIES=${MAX_RETRIES:-3}
FOREIGN_MAX_CORES=${FOREIGN_MAX_CORES:-0.1}
IDLE_MAX_BUSY=${IDLE_MAX_BUSY:-10}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-60}
RATE_KA=${RATE_KA:-1000}
RATE_KA_CONNS=${RATE_KA_CONNS:-8}
RATE_CLOSE=${RATE_CLOSE:-250}
RATE_CLOSE_CONNS=${RATE_CLOSE_CONNS:-8}
NO_BUILD=${NO_BUILD:-}

CLIENT_SAN=spiffe://cluster.local/ns/full/sa/sleep
SERVER_SAN=spiffe://cluster.local/ns/full/sa/httpbin
SERVER_DNS=httpbin.full.svc.cluster.local
HOST=127.0.0.1 # everything binds and connects here, nowhere else

ALL_CONFIGS="direct tessera haproxy nginx"
ALL_SCENARIOS="ka-c50 ka16k-c50 ka-c1 close-c50 rate-ka rate-close"

die() { echo "run.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------- arguments
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_num() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
is_uint "$DURATION" && ((DURATION >= 1)) || die "DURATION must be a whole number of seconds >= 1"
is_uint "$REPEATS" && ((REPEATS >= 1)) || die "REPEATS must be >= 1"
is_uint "$THREADS" && ((THREADS >= 1)) || die "THREADS must be >= 1"
is_uint "$WARMUP" || die "WARMUP must be a whole number of seconds"
is_uint "$MAX_RETRIES" || die "MAX_RETRIES must be a whole number"
is_uint "$IDLE_TIMEOUT" || die "IDLE_TIMEOUT must be a whole number of seconds"
is_num "$FOREIGN_MAX_CORES" || die "FOREIGN_MAX_CORES must be a number"
is_num "$IDLE_MAX_BUSY" || die "IDLE_MAX_BUSY must be a number"
for v in RATE_KA RATE_KA_CONNS RATE_CLOSE RATE_CLOSE_CONNS; do
    is_uint "${!v}" && ((${!v} >= 1)) || die "$v must be a whole number >= 1"
done
read -r -a configs <<<"$CONFIGS"
read -r -a scenarios <<<"$SCENARIOS"
((${#configs[@]})) || die "CONFIGS is empty"
((${#scenarios[@]})) || die "SCENARIOS is empty"
for c in "${configs[@]}"; do [[ " $ALL_CONFIGS " == *" $c "* ]] || die "unknown config '$c' (known: $ALL_CONFIGS)"; done
for s in "${scenarios[@]}"; do [[ " $ALL_SCENARIOS " == *" $s "* ]] || die "unknown scenario '$s' (known: $ALL_SCENARIOS)"; done
want() { [[ " ${configs[*]} " == *" $1 "* ]]; }
needs_wrk=; needs_loadgen=
for s in "${scenarios[@]}"; do case $s in rate-*) needs_loadgen=1 ;; *) needs_wrk=1 ;; esac; done

# ---------------------------------------------------------------------------- tools
# Nothing is installed here: missing tools are named with the apt-get line that installs them.
missing=()
need_tool() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_tool nginx nginx # the app, and the nginx pair
need_tool openssl openssl
need_tool curl curl
need_tool ss iproute2
need_tool timeout coreutils
[ -n "$needs_wrk" ] && need_tool wrk wrk
want haproxy && need_tool haproxy haproxy
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "run.sh: missing tools. Install them with:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if [ -z "$NO_BUILD" ] && ! command -v cargo >/dev/null 2>&1; then
    die "cargo not found (needed to build tessera-loadgen and tessera; or set NO_BUILD=1)"
fi

# ---------------------------------------------------------------------------- output dirs
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$BENCH_DIR/results/$STAMP
while [ -e "$OUT" ]; do sleep 1; STAMP=$(date +%Y%m%d-%H%M%S); OUT=$BENCH_DIR/results/$STAMP; done
RUN=$OUT/run
RAW=$OUT/raw
mkdir -p "$RUN" "$RAW"
LOG=$OUT/run.log
: >"$LOG"
log() { printf '[%s] %s\n' "$(date +%T)" "$*" | tee -a "$LOG" >&2; }

# ---------------------------------------------------------------------------- processes
# Everything this script starts is tracked by PID and stopped by PID (TERM, then KILL).
declare -a TRACKED=()
LOAD_PID=

# Prints "pid start ppid ticks" for every process (ticks = utime+stime+cutime+cstime).
snapshot() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{
        line = $0; pid = $1
        sub(/^[0-9]+ \(.*\) /, "", line)   # comm may hold spaces and parentheses
        split(line, f, " ")
        print pid, f[20], f[2], f[12] + f[13] + f[14] + f[15]
    }'
}

# PIDs of the trees rooted at the given PIDs (roots included), from a fresh snapshot.
tree_pids() {
    snapshot | awk -v roots="$*" '
        { ppid[$1] = $3 }
        END {
            n = split(roots, r, " "); for (i = 1; i <= n; i++) if (r[i] in ppid) in_tree[r[i]] = 1
            do { changed = 0
                 for (p in ppid) if (!(p in in_tree) && (ppid[p] in in_tree)) { in_tree[p] = 1; changed = 1 }
            } while (changed)
            for (p in in_tree) print p
        }'
}

alive() { [ -r "/proc/$1/stat" ] && ! awk '{ sub(/^[0-9]+ \(.*\) /, ""); exit ($1 == "Z") ? 0 : 1 }' "/proc/$1/stat" 2>/dev/null; }

# Stops a tracked process and its descendants: TERM, up to 5 s, then KILL. By PID only.
stop_tree() {
    local root=$1 p i
    local -a pids
    mapfile -t pids < <(tree_pids "$root")
    [ ${#pids[@]} -gt 0 ] || pids=("$root")
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        local any=
        for p in "${pids[@]}"; do alive "$p" && any=1; done
        [ -z "$any" ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null || true; done
    wait "$root" 2>/dev/null || true
}

untrack() {
    local pid=$1 i
    for i in "${!TRACKED[@]}"; do [ "${TRACKED[$i]}" = "$pid" ] && unset 'TRACKED[i]'; done
    TRACKED=("${TRACKED[@]}")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${LOAD_PID:-}" ]; then stop_tree "$LOAD_PID"; fi
    local pid
    for pid in "${TRACKED[@]}"; do stop_tree "$pid"; done
    if [ $rc -ne 0 ] && [ -z "${FINISHED:-}" ]; then echo "run.sh: stopped (exit $rc); partial results in $OUT" >&2; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOGFILE CMD... : starts CMD in the background, tracked; sets STARTED_PID.
start() {
    local name=$1 logf=$2
    shift 2
    "$@" >"$logf" 2>&1 &
    STARTED_PID=$!
    TRACKED+=("$STARTED_PID")
    log "started $name (pid $STARTED_PID): $*"
}

listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

# wait_listen PID PORT: 0 when PORT listens, 1 on timeout (10 s); if PID exited, sets EXITED_RC
# and returns 2.
wait_listen() {
    local pid=$1 port=$2 i
    EXITED_RC=
    for ((i = 0; i < 100; i++)); do
        listening "$port" && return 0
        if ! alive "$pid"; then
            EXITED_RC=0
            wait "$pid" 2>/dev/null || EXITED_RC=$?
            untrack "$pid"
            return 2
        fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------- ports
# Random ports from 20000-31999 (below Linux's default ephemeral range), each checked free.
declare -A USED_PORTS=()
port_free() { [ -z "$(ss -Htan "( sport = :$1 or dport = :$1 )" 2>/dev/null)" ]; }
pick_port() { # VAR
    local p i
    for ((i = 0; i < 500; i++)); do
        p=$((20000 + RANDOM % 12000))
        [ -n "${USED_PORTS[$p]:-}" ] && continue
        if port_free "$p"; then USED_PORTS[$p]=1; printf -v "$1" '%s' "$p"; return 0; fi
    done
    die "no free port found"
}
pick_port APP_PORT
pick_port HAPROXY_CLIENT_PORT; pick_port HAPROXY_SERVER_PORT
pick_port NGINX_CLIENT_PORT; pick_port NGINX_SERVER_PORT
pick_port TESSERA_CLIENT_PORT; pick_port TESSERA_SERVER_PORT
pick_port TESSERA_ADMIN_PORT_CLIENT; pick_port TESSERA_ADMIN_PORT_SERVER

# ---------------------------------------------------------------------------- builds
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOADGEN=$TARGET_DIR/release/tessera-loadgen
TESSERA_BIN=$TARGET_DIR/release/tessera
declare -A SKIP=() # config -> reason

is_placeholder() { # a template with nothing but comments and blank lines
    [ ! -s "$1" ] || ! grep -vqE '^[[:space:]]*(#.*)?$' "$1"
}

if [ -n "$needs_loadgen" ]; then
    if [ -z "$NO_BUILD" ] && { [ ! -x "$LOADGEN" ] ||
        [ -n "$(find "$BENCH_DIR/loadgen" "$ROOT/Cargo.lock" -newer "$LOADGEN" -type f -print -quit)" ]; }; then
        log "building tessera-loadgen (cargo build --release -p tessera-loadgen)"
        (cd "$ROOT" && cargo build --release -p tessera-loadgen) >"$OUT/build-loadgen.log" 2>&1 ||
            { tail -20 "$OUT/build-loadgen.log" >&2; die "building tessera-loadgen failed (log: $OUT/build-loadgen.log)"; }
    fi
    [ -x "$LOADGEN" ] || die "$LOADGEN is missing"
fi

if want tessera; then
    if is_placeholder "$BENCH_DIR/conf/tessera-client.yaml.tmpl" || is_placeholder "$BENCH_DIR/conf/tessera-server.yaml.tmpl"; then
        SKIP[tessera]="the templates bench/conf/tessera-{client,server}.yaml.tmpl are still placeholders"
    elif [ -z "$NO_BUILD" ]; then
        log "building tessera (cargo build --release --bin tessera)"
        if ! (cd "$ROOT" && cargo build --release --bin tessera) >"$OUT/build-tessera.log" 2>&1; then
            tail -20 "$OUT/build-tessera.log" >&2
            SKIP[tessera]="cargo build --release --bin tessera failed (log: build-tessera.log)"
        fi
    fi
    if [ -z "${SKIP[tessera]:-}" ] && [ ! -x "$TESSERA_BIN" ]; then SKIP[tessera]="$TESSERA_BIN is missing"; fi
    [ -n "${SKIP[tessera]:-}" ] && log "SKIPPING tessera: ${SKIP[tessera]}"
fi

# ---------------------------------------------------------------------------- certificates, configs
CERTS=$OUT/certs
"$BENCH_DIR/gen-certs.sh" "$CERTS" >"$OUT/gen-certs.log" 2>&1 || { cat "$OUT/gen-certs.log" >&2; die "gen-certs.sh failed"; }

mkdir -p "$RUN/www" "$RUN/app/tmp"
head -c 16384 /dev/zero | tr '\0' 'x' >"$RUN/www/16k"

# render TEMPLATE OUTPUT CLIENT_PORT SERVER_PORT
render() {
    local tmpl=$1 out=$2
    sed -e "s|{{CLIENT_PORT}}|$3|g" -e "s|{{SERVER_PORT}}|$4|g" -e "s|{{APP_PORT}}|$APP_PORT|g" \
        -e "s|{{ADMIN_PORT_CLIENT}}|$TESSERA_ADMIN_PORT_CLIENT|g" -e "s|{{ADMIN_PORT_SERVER}}|$TESSERA_ADMIN_PORT_SERVER|g" \
        -e "s|{{THREADS}}|$THREADS|g" -e "s|{{CA}}|$CERTS/ca.crt|g" \
        -e "s|{{CLIENT_CERT}}|$CERTS/client.crt|g" -e "s|{{CLIENT_KEY}}|$CERTS/client.key|g" \
        -e "s|{{CLIENT_PEM}}|$CERTS/client.pem|g" -e "s|{{SERVER_CERT}}|$CERTS/server.crt|g" \
        -e "s|{{SERVER_KEY}}|$CERTS/server.key|g" -e "s|{{SERVER_PEM}}|$CERTS/server.pem|g" \
        -e "s|{{CLIENT_SAN}}|$CLIENT_SAN|g" -e "s|{{SERVER_SAN}}|$SERVER_SAN|g" -e "s|{{SERVER_DNS}}|$SERVER_DNS|g" \
        -e "s|{{RUN_DIR}}|$RUN|g" -e "s|{{CONF_DIR}}|$BENCH_DIR/conf|g" -e "s|{{CERT_DIR}}|$CERTS|g" \
        "$tmpl" >"$out"
    if grep -q '{{[A-Z_]*}}' "$out"; then die "$out: unknown placeholder $(grep -o '{{[A-Z_]*}}' "$out" | head -1)"; fi
}

render "$BENCH_DIR/conf/app-nginx.conf.tmpl" "$RUN/app/nginx.conf" 0 0
for side in client server; do
    mkdir -p "$RUN/nginx-$side/tmp" "$RUN/haproxy-$side" "$RUN/tessera-$side"
done
if want haproxy; then
    render "$BENCH_DIR/conf/haproxy-client.cfg.tmpl" "$RUN/haproxy-client/haproxy.cfg" "$HAPROXY_CLIENT_PORT" "$HAPROXY_SERVER_PORT"
    render "$BENCH_DIR/conf/haproxy-server.cfg.tmpl" "$RUN/haproxy-server/haproxy.cfg" "$HAPROXY_CLIENT_PORT" "$HAPROXY_SERVER_PORT"
    for side in client server; do
        haproxy -c -f "$RUN/haproxy-$side/haproxy.cfg" >"$RUN/haproxy-$side/check.log" 2>&1 ||
            { cat "$RUN/haproxy-$side/check.log" >&2; die "haproxy-$side config invalid"; }
    done
fi
if want nginx; then
    render "$BENCH_DIR/conf/nginx-client.conf.tmpl" "$RUN/nginx-client/nginx.conf" "$NGINX_CLIENT_PORT" "$NGINX_SERVER_PORT"
    render "$BENCH_DIR/conf/nginx-server.conf.tmpl" "$RUN/nginx-server/nginx.conf" "$NGINX_CLIENT_PORT" "$NGINX_SERVER_PORT"
fi
if want tessera && [ -z "${SKIP[tessera]:-}" ]; then
    render "$BENCH_DIR/conf/tessera-client.yaml.tmpl" "$RUN/tessera-client/config.yaml" "$TESSERA_CLIENT_PORT" "$TESSERA_SERVER_PORT"
    render "$BENCH_DIR/conf/tessera-server.yaml.tmpl" "$RUN/tessera-server/config.yaml" "$TESSERA_CLIENT_PORT" "$TESSERA_SERVER_PORT"
fi

# ---------------------------------------------------------------------------- environment record
ENV=$OUT/env.txt
{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm); $(nproc) CPUs: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "repo: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
    echo "knobs: DURATION=$DURATION REPEATS=$REPEATS THREADS=$THREADS WARMUP=$WARMUP CONFIGS=\"${configs[*]}\" SCENARIOS=\"${scenarios[*]}\""
    echo "       RATE_KA=$RATE_KA/$RATE_KA_CONNS conns RATE_CLOSE=$RATE_CLOSE/$RATE_CLOSE_CONNS conns MAX_RETRIES=$MAX_RETRIES FOREIGN_MAX_CORES=$FOREIGN_MAX_CORES IDLE_MAX_BUSY=$IDLE_MAX_BUSY%"
    echo "ports: app=$APP_PORT haproxy=$HAPROXY_CLIENT_PORT/$HAPROXY_SERVER_PORT nginx=$NGINX_CLIENT_PORT/$NGINX_SERVER_PORT tessera=$TESSERA_CLIENT_PORT/$TESSERA_SERVER_PORT (admin $TESSERA_ADMIN_PORT_CLIENT/$TESSERA_ADMIN_PORT_SERVER)"
    echo "nginx: $(nginx -v 2>&1)"
    command -v haproxy >/dev/null && echo "haproxy: $(haproxy -v 2>&1 | head -1)"
    command -v wrk >/dev/null && echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "openssl: $(openssl version)"
    echo "curl: $(curl --version | head -1)"
    command -v rustc >/dev/null && echo "rustc: $(rustc --version)"
    [ -x "$LOADGEN" ] && echo "loadgen: $("$LOADGEN" --version 2>&1)"
    if want tessera && [ -z "${SKIP[tessera]:-}" ]; then echo "tessera: $("$TESSERA_BIN" --version 2>&1 | head -1)"; fi
    for c in "${!SKIP[@]}"; do echo "skipped: $c: ${SKIP[$c]}"; done
} >"$ENV"

# ---------------------------------------------------------------------------- the app
start app "$RUN/app/stdout.log" nginx -p "$RUN/app" -e "$RUN/app/error.log" -c "$RUN/app/nginx.conf"
APP_PID=$STARTED_PID
wait_listen "$APP_PID" "$APP_PORT" || { cat "$RUN/app/error.log" "$RUN/app/stdout.log" >&2 2>/dev/null; die "the app did not start"; }
[ "$(curl -sS --max-time 5 "http://$HOST:$APP_PORT/")" = "ok" ] || die "the app does not answer ok"

# ---------------------------------------------------------------------------- configs
# start_config CONFIG: 0 = up (sets ENTRY_PORT, SERVER_SIDE_PORT, CLIENT_PID, SERVER_PID),
# 3 = skip (SKIP[config] set), 1 = failed.
CLIENT_PID=; SERVER_PID=; ENTRY_PORT=; SERVER_SIDE_PORT=
start_side() { # config side port cmd...
    local cfg=$1 side=$2 port=$3
    shift 3
    port_free "$port" || { log "$cfg-$side: port $port is taken"; FAIL_REASON="port $port is taken"; return 1; }
    start "$cfg-$side" "$RUN/$cfg-$side/stdout.log" "$@"
    local pid=$STARTED_PID rc=0
    wait_listen "$pid" "$port" || rc=$?
    case $rc in
        0) SIDE_PID=$pid; return 0 ;;
        2) if [ "$cfg" = tessera ] && [ "$EXITED_RC" = 2 ]; then
               SKIP[tessera]="\`tessera proxy\` exited with code 2 (role not available yet): $(tail -1 "$RUN/$cfg-$side/stdout.log")"
               return 3
           fi
           log "$cfg-$side exited with code $EXITED_RC:"; tail -20 "$RUN/$cfg-$side/stdout.log" >&2
           FAIL_REASON="$cfg-$side exited with code $EXITED_RC: $(tail -1 "$RUN/$cfg-$side/stdout.log")" ;;
        *) log "$cfg-$side did not listen on $port within 10 s"; stop_tree "$pid"; untrack "$pid"
           FAIL_REASON="$cfg-$side did not listen on $port within 10 s" ;;
    esac
    return 1
}

start_config() {
    local cfg=$1 rc
    CLIENT_PID=; SERVER_PID=
    case $cfg in
        direct) ENTRY_PORT=$APP_PORT; SERVER_SIDE_PORT=; return 0 ;;
        haproxy)
            ENTRY_PORT=$HAPROXY_CLIENT_PORT; SERVER_SIDE_PORT=$HAPROXY_SERVER_PORT
            start_side haproxy server "$SERVER_SIDE_PORT" haproxy -db -f "$RUN/haproxy-server/haproxy.cfg" || return $?
            SERVER_PID=$SIDE_PID
            start_side haproxy client "$ENTRY_PORT" haproxy -db -f "$RUN/haproxy-client/haproxy.cfg" || return $?
            CLIENT_PID=$SIDE_PID ;;
        nginx)
            ENTRY_PORT=$NGINX_CLIENT_PORT; SERVER_SIDE_PORT=$NGINX_SERVER_PORT
            start_side nginx server "$SERVER_SIDE_PORT" nginx -p "$RUN/nginx-server" -e "$RUN/nginx-server/error.log" -c "$RUN/nginx-server/nginx.conf" || return $?
            SERVER_PID=$SIDE_PID
            start_side nginx client "$ENTRY_PORT" nginx -p "$RUN/nginx-client" -e "$RUN/nginx-client/error.log" -c "$RUN/nginx-client/nginx.conf" || return $?
            CLIENT_PID=$SIDE_PID ;;
        tessera)
            ENTRY_PORT=$TESSERA_CLIENT_PORT; SERVER_SIDE_PORT=$TESSERA_SERVER_PORT
            start_side tessera server "$SERVER_SIDE_PORT" "$TESSERA_BIN" proxy --config "$RUN/tessera-server/config.yaml" || return $?
            SERVER_PID=$SIDE_PID
            start_side tessera client "$ENTRY_PORT" "$TESSERA_BIN" proxy --config "$RUN/tessera-client/config.yaml" || return $?
            CLIENT_PID=$SIDE_PID ;;
    esac
    return 0
}

stop_config() {
    local pid
    for pid in $CLIENT_PID $SERVER_PID; do stop_tree "$pid"; untrack "$pid"; done
    CLIENT_PID=; SERVER_PID=
}

# ---------------------------------------------------------------------------- checks
declare -A CHECKED=()
: >"$OUT/checks.txt"
check_config() { # config: 0 = all checks pass
    local cfg=$1 body size code rc fails=0 d=$OUT/checks/$1
    mkdir -p "$d"
    local CHECKS=$d/last.txt
    : >"$CHECKS"
    body=$(curl -sS --max-time 5 "http://$HOST:$ENTRY_PORT/" 2>&1) || true
    if [ "$body" = "ok" ]; then echo "$cfg: end-to-end GET / -> ok" >>"$CHECKS"
    else echo "$cfg: FAIL end-to-end GET / -> ${body:0:200}" >>"$CHECKS"; fails=1; fi
    size=$(curl -sS --max-time 5 -o "$d/16k" -w '%{size_download}' "http://$HOST:$ENTRY_PORT/16k" 2>&1) || true
    if [ "$size" = 16384 ] && cmp -s "$d/16k" "$RUN/www/16k"; then echo "$cfg: end-to-end GET /16k -> 16384 bytes, identical" >>"$CHECKS"
    else echo "$cfg: FAIL end-to-end GET /16k -> '$size' bytes" >>"$CHECKS"; fails=1; fi
    if [ "$cfg" != direct ]; then
        local url="https://$SERVER_DNS:$SERVER_SIDE_PORT/" resolve="$SERVER_DNS:$SERVER_SIDE_PORT:$HOST"
        # 1. No client certificate: the server side must refuse (TLS alert, or an HTTP error
        #    status where the peer checks after the handshake, as nginx does: 400).
        rc=0
        code=$(curl -sS --max-time 5 --cacert "$CERTS/ca.crt" --resolve "$resolve" -o "$d/nocert.body" -w '%{http_code}' "$url" 2>"$d/nocert.err") || rc=$?
        if [ $rc -ne 0 ]; then
            echo "$cfg: server side refuses a client without a certificate: curl exit $rc: $(tr '\n' ' ' <"$d/nocert.err")" >>"$CHECKS"
        elif [[ $code != 2* ]] && ! grep -qx ok "$d/nocert.body"; then
            echo "$cfg: server side refuses a client without a certificate: TLS accepted, then HTTP $code: $(sed -n 's:.*<title>\(.*\)</title>.*:\1:p' "$d/nocert.body" | head -1)" >>"$CHECKS"
        else
            echo "$cfg: FAIL server side SERVED a client without a certificate (HTTP $code)" >>"$CHECKS"; fails=1
        fi
        # The same with openssl s_client (TLS 1.3 reports a missing certificate after the handshake).
        timeout 10 openssl s_client -connect "$HOST:$SERVER_SIDE_PORT" -servername "$SERVER_DNS" -CAfile "$CERTS/ca.crt" \
            -verify_return_error -tls1_3 -ign_eof <<<$'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >"$d/nocert.s_client" 2>&1 || true
        local sc
        sc=$(grep -oiE -m1 '(tlsv1[0-9]*|sslv3) alert [a-z ]+' "$d/nocert.s_client" || true)
        [ -n "$sc" ] && sc="TLS alert: $sc"
        [ -z "$sc" ] && sc=$(grep -m1 '^HTTP/' "$d/nocert.s_client" | tr -d '\r' || true)
        echo "$cfg: (info) openssl s_client without a certificate: ${sc:-no alert and no HTTP response}" >>"$CHECKS"
        # 2. With the client certificate: served, and the server certificate verifies against
        #    the CA for the DNS name.
        body=$(curl -sS --max-time 5 --cacert "$CERTS/ca.crt" --cert "$CERTS/client.crt" --key "$CERTS/client.key" \
            --resolve "$resolve" "$url" 2>&1) || true
        if [ "$body" = ok ]; then echo "$cfg: server side serves a client presenting client.crt -> ok" >>"$CHECKS"
        else echo "$cfg: FAIL server side with client.crt -> ${body:0:200}" >>"$CHECKS"; fails=1; fi
        # 3. Negotiated parameters.
        timeout 10 openssl s_client -connect "$HOST:$SERVER_SIDE_PORT" -servername "$SERVER_DNS" -CAfile "$CERTS/ca.crt" \
            -cert "$CERTS/client.crt" -key "$CERTS/client.key" -verify_return_error -brief </dev/null >"$d/s_client.txt" 2>&1 || true
        local proto cipher group
        proto=$(sed -n 's/^Protocol version: *//p' "$d/s_client.txt" | head -1)
        cipher=$(sed -n 's/^Ciphersuite: *//p' "$d/s_client.txt" | head -1)
        group=$(sed -n 's/^\(Server \)\{0,1\}Temp Key: *//p; s/^Negotiated TLS1.3 group: *//p' "$d/s_client.txt" | head -1)
        echo "$cfg: negotiated (openssl s_client with client.crt to the server side): ${proto:-?} ${cipher:-?} ${group:-?}" >>"$CHECKS"
        [ "$proto" = TLSv1.3 ] || { echo "$cfg: FAIL negotiated protocol is '${proto:-none}', not TLSv1.3" >>"$CHECKS"; fails=1; }
    fi
    cat "$CHECKS" >>"$OUT/checks.txt"
    if [ -z "${CHECKED[$cfg]:-}" ]; then sed 's/^/check: /' "$CHECKS" >>"$ENV"; CHECKED[$cfg]=1; fi
    while read -r l; do log "  $l"; done <"$CHECKS"
    return $fails
}

# ---------------------------------------------------------------------------- measuring
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

# busy% and steal% of the whole machine over one second (/proc/stat)
idle_sample() {
    local a b
    read -r -a a < <(head -1 /proc/stat)
    sleep 1
    read -r -a b < <(head -1 /proc/stat)
    awk -v a="${a[*]}" -v b="${b[*]}" -v max="$IDLE_MAX_BUSY" 'BEGIN {
        split(a, x, " "); split(b, y, " "); t = 0
        for (i = 2; i <= 9; i++) t += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6]); steal = y[9] - x[9]
        busy = t > 0 ? 100 * (t - idle - steal) / t : 0
        printf "%.1f %s\n", busy, (busy <= max) ? "idle" : "busy" }'
}
wait_idle() {
    local start=$SECONDS s
    while :; do
        s=$(idle_sample)
        [ "${s#* }" = idle ] && { IDLE_WAITED=$((SECONDS - start)); return 0; }
        if ((SECONDS - start >= IDLE_TIMEOUT)); then
            log "  no idle second within ${IDLE_TIMEOUT}s (last: ${s% *}% busy); measuring anyway"
            IDLE_WAITED=$((SECONDS - start)); return 0
        fi
    done
}

# CPU ticks between two snapshots: client tree, server tree, app tree, and processes that are
# not the harness's (not descendants of this script, not kernel threads).
cpu_delta() { # before after
    awk -v c="${CLIENT_PID:-0}" -v s="${SERVER_PID:-0}" -v app="$APP_PID" -v h="$$" '
        function closure(root, pp, set,   ch, p) {
            set[root] = 1
            do { ch = 0; for (p in pp) if (!(p in set) && (pp[p] in set)) { set[p] = 1; ch = 1 } } while (ch)
        }
        function tree(root, pp, tk, k,    set, p, sum) {
            if (root == 0) return 0
            closure(root, pp, set)
            for (p in set) if (p in tk) sum += tk[p]
            return sum
        }
        FNR == NR { bk[$1] = $1 " " $2; bpp[$1] = $3; bt[$1] = $4; next }
        { ak[$1] = $1 " " $2; app_[$1] = $3; at[$1] = $4 }
        END {
            # per-process deltas (same pid and start time), new processes count from 0
            for (p in at) { d[p] = at[p] - ((p in bk && bk[p] == ak[p]) ? bt[p] : 0) }
            printf "%d %d %d ", tree(c, app_, d), tree(s, app_, d), tree(app, app_, d)
            closure(h, app_, ha); closure(h, bpp, hb)
            f = 0
            for (p in at) if (!(p in ha) && !(p in hb) && p != 2 && app_[p] != 2) f += d[p]
            # a process that ended was reaped into its parent cutime with all its life: take
            # out what it had used before the run
            for (p in bt) if (!(p in hb) && p != 2 && bpp[p] != 2 && !(p in ak && ak[p] == bk[p])) f -= bt[p]
            printf "%d\n", (f > 0) ? f : 0
        }' "$1" "$2"
}

# "RSS_kB PSS_kB" summed over the trees of the given PIDs
mem_kb() {
    local p rss=0 pss=0 v
    for p in $(tree_pids "$@"); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) && rss=$((rss + ${v:-0}))
        v=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null) && pss=$((pss + ${v:-0}))
    done
    echo "$rss $pss"
}

jget() { sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" "$1" | head -1; }
# seconds from bash's `times` line ("0m1.234s 0m0.567s") summed
times_s() { sed -n 2p "$1" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] } printf "%.3f", s }'; }

# load_cmd SCENARIO URL_BASE: prints the command (one word per line)
load_cmd() {
    local sc=$1 base=$2
    case $sc in
        ka-c50) printf '%s\n' wrk -t1 -c50 "-d${DURATION}s" -s "$BENCH_DIR/report.lua" "$base/" ;;
        ka16k-c50) printf '%s\n' wrk -t1 -c50 "-d${DURATION}s" -s "$BENCH_DIR/report.lua" "$base/16k" ;;
        ka-c1) printf '%s\n' wrk -t1 -c1 "-d${DURATION}s" -s "$BENCH_DIR/report.lua" "$base/" ;;
        close-c50) printf '%s\n' wrk -t1 -c50 "-d${DURATION}s" -H "Connection: close" -s "$BENCH_DIR/report.lua" "$base/" ;;
        rate-ka) printf '%s\n' "$LOADGEN" --rate "$RATE_KA" --connections "$RATE_KA_CONNS" --duration "$DURATION" "$base/" ;;
        rate-close) printf '%s\n' "$LOADGEN" --rate "$RATE_CLOSE" --connections "$RATE_CLOSE_CONNS" --close --duration "$DURATION" "$base/" ;;
    esac
}

RUNS=$OUT/runs.tsv
CONTENDED=$OUT/contended.tsv
HEADER="repeat	config	scenario	attempt	status	wall_s	requests	errors	rps	p50_ms	p99_ms	cpu_client_s	cpu_server_s	cpu_proxy_s	us_per_req	rss_mib	pss_mib	app_cpu_s	load_cpu_s	chain_cpu_pct	foreign_cores	steal_s	idle_wait_s	lag_p99_ms"
echo "$HEADER" >"$RUNS"
echo "$HEADER" >"$CONTENDED"

# measure REPEAT CONFIG SCENARIO
measure() {
    local rep=$1 cfg=$2 sc=$3 attempt status raw snapb snapa rc
    local -a cmd
    mapfile -t cmd < <(load_cmd "$sc" "http://$HOST:$ENTRY_PORT")
    for ((attempt = 1; attempt <= MAX_RETRIES + 1; attempt++)); do
        raw=$RAW/r$rep-$cfg-$sc-a$attempt
        wait_idle
        snapb=$raw.snap0; snapa=$raw.snap1
        local st0 st1
        st0=$(awk '/^cpu / { print $9 }' /proc/stat)
        snapshot >"$snapb"
        local t0=$EPOCHREALTIME
        (
            rc=0
            timeout -k 5 $((DURATION + 30)) "${cmd[@]}" >"$raw.out" 2>"$raw.err" || rc=$?
            times >"$raw.times"
            exit $rc
        ) &
        LOAD_PID=$!
        sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
        local mem="0 0"
        [ -n "$CLIENT_PID" ] && mem=$(mem_kb "$CLIENT_PID" "$SERVER_PID")
        rc=0
        wait "$LOAD_PID" || rc=$?
        LOAD_PID=
        local t1=$EPOCHREALTIME
        snapshot >"$snapa"
        st1=$(awk '/^cpu / { print $9 }' /proc/stat)
        local res=$raw.out
        if [ "${cmd[0]}" = wrk ]; then grep '^JSON ' "$raw.out" | sed 's/^JSON //' >"$raw.json" || true; res=$raw.json; fi
        if [ $rc -ne 0 ] || [ -z "$(jget "$res" requests)" ]; then
            log "  $cfg $sc: load generator failed (exit $rc): $(tail -3 "$raw.err" "$raw.out" 2>/dev/null | tr '\n' ' ')"
            return 1
        fi
        local deltas
        deltas=$(cpu_delta "$snapb" "$snapa")
        rm -f "$snapb" "$snapa"
        local line
        line=$(awk -v ticks="$deltas" -v tck="$CLK_TCK" -v t0="$t0" -v t1="$t1" -v ncpu="$NCPU" -v mem="$mem" \
            -v req="$(jget "$res" requests)" -v err="$(jget "$res" errors)" -v non2xx="$(jget "$res" non2xx)" \
            -v ok="$(jget "$res" ok)" -v rps="$(jget "$res" rps)" -v p50="$(jget "$res" p50_ms)" -v p99="$(jget "$res" p99_ms)" \
            -v lag="$(jget "$res" lag_p99_ms)" -v load="$(times_s "$raw.times")" -v steal=$((st1 - st0)) \
            -v haspx="${CLIENT_PID:+1}" -v idle="$IDLE_WAITED" -v lim="$FOREIGN_MAX_CORES" 'BEGIN {
                split(ticks, t, " "); split(mem, m, " ")
                wall = t1 - t0; c = t[1] / tck; s = t[2] / tck; a = t[3] / tck; f = t[4] / tck / wall
                errors = err + non2xx
                n = (ok != "") ? ok + non2xx : req   # completed responses
                px = c + s
                upr = (haspx && n > 0) ? sprintf("%.1f", px * 1e6 / n) : "-"
                chain = 100 * (px + a + load) / (ncpu * wall)
                printf "%.3f\t%d\t%d\t%s\t%s\t%s\t", wall, n, errors, rps, p50, p99
                if (haspx) printf "%.2f\t%.2f\t%.2f\t%s\t%.1f\t%.1f\t", c, s, px, upr, m[1] / 1024, m[2] / 1024
                else printf "-\t-\t-\t-\t-\t-\t"
                printf "%.2f\t%.2f\t%.1f\t%.3f\t%.2f\t%s\t%s", a, load, chain, f, steal / tck, idle, (lag == "" ? "-" : lag)
                printf "\t%s\n", (f > lim) ? "contended" : "ok"
            }')
        status=${line##*$'\t'}
        line=${line%$'\t'*}
        local foreign
        foreign=$(cut -f16 <<<"$line")
        if [ "$status" = contended ] && ((attempt <= MAX_RETRIES)); then
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$cfg" "$sc" "$attempt" contended "$line" >>"$CONTENDED"
            log "  $cfg $sc: other processes used $foreign cores (> $FOREIGN_MAX_CORES); discarded, re-measuring"
            continue
        fi
        [ "$status" = contended ] && status=flagged && log "  $cfg $sc: still contended after $MAX_RETRIES re-measurements; kept, flagged"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$cfg" "$sc" "$attempt" "$status" "$line" >>"$RUNS"
        log "  $(printf '%-8s %-10s' "$cfg" "$sc") $(awk -F'\t' '{ printf "%s req/s  p50 %s  p99 %s ms  errors %s", $4, $5, $6, $3; if ($10 != "-") printf "  proxies %s µs/req, %s MiB PSS", $10, $12; printf "  foreign %s cores", $16 }' <<<"$line")$([ "$status" = flagged ] && echo ' [flagged]')"
        return 0
    done
}

# warm-up: unmeasured load
warm_up() {
    ((WARMUP > 0)) || return 0
    timeout -k 5 $((WARMUP + 30)) wrk -t1 -c50 "-d${WARMUP}s" "http://$HOST:$ENTRY_PORT/" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------- main loop
FAILED=()
declare -A CFG_FAILED=()
log "results: $OUT"
log "configs: ${configs[*]}; scenarios: ${scenarios[*]}; ${DURATION}s each, $REPEATS repeats"
for ((rep = 1; rep <= REPEATS; rep++)); do
    n=${#configs[@]}
    order=()
    for ((i = 0; i < n; i++)); do order+=("${configs[$(((i + rep - 1) % n))]}"); done
    log "repeat $rep/$REPEATS: ${order[*]}"
    for cfg in "${order[@]}"; do
        [ -n "${SKIP[$cfg]:-}" ] && continue
        [ -n "${CFG_FAILED[$cfg]:-}" ] && continue
        rc=0
        start_config "$cfg" || rc=$?
        if [ $rc -eq 3 ]; then
            log "SKIPPING $cfg: ${SKIP[$cfg]}"
            echo "skipped: $cfg: ${SKIP[$cfg]}" >>"$ENV"
            stop_config
            continue
        elif [ $rc -ne 0 ]; then
            log "FAILED to start $cfg; not measured"
            CFG_FAILED[$cfg]="did not start: ${FAIL_REASON:-?} (logs: run/$cfg-*/)"; FAILED+=("$cfg: did not start")
            stop_config
            continue
        fi
        if ! check_config "$cfg"; then
            log "FAILED checks for $cfg; not measured (see checks.txt)"
            CFG_FAILED[$cfg]="failed the mTLS checks (see checks.txt)"; FAILED+=("$cfg: checks failed")
            stop_config
            continue
        fi
        warm_up
        for sc in "${scenarios[@]}"; do
            measure "$rep" "$cfg" "$sc" || FAILED+=("$cfg $sc repeat $rep: load generator failed")
        done
        stop_config
    done
done

for c in "${!CFG_FAILED[@]}"; do echo "failed: $c: ${CFG_FAILED[$c]}" >>"$ENV"; done
for c in "${!SKIP[@]}"; do grep -q "^skipped: $c:" "$ENV" || echo "skipped: $c: ${SKIP[$c]}" >>"$ENV"; done

# ---------------------------------------------------------------------------- summary
FINISHED=1
"$BENCH_DIR/summarize.sh" "$OUT" >"$OUT/summary.md"
cat "$OUT/summary.md"
log "summary: $OUT/summary.md"
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'run.sh: problems:\n' >&2
    printf '  %s\n' "${FAILED[@]}" >&2
    exit 1
fi
