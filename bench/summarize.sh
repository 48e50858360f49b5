#!/usr/bin/env bash
# Markdown summary of one results directory written by bench/run.sh (medians over repeats).
#
#   bench/summarize.sh bench/results/<stamp> > summary.md
set -euo pipefail
dir=${1:?usage: summarize.sh RESULTS_DIR}
runs=$dir/runs.tsv
[ -r "$runs" ] || { echo "summarize.sh: $runs not found" >&2; exit 1; }

env=$dir/env.txt
contended=0
[ -r "$dir/contended.tsv" ] && contended=$(($(wc -l <"$dir/contended.tsv") - 1))

echo "# Tessera data-path benchmark, $(basename "$dir")"
echo
if [ -r "$env" ]; then
    echo '```'
    grep -vE '^(check|skipped|failed):' "$env" || true
    echo '```'
    echo
fi

awk -F'\t' -v contended="$contended" '
function median(key,    n, i, j, v, a) {
    n = cnt[key]; if (n == 0) return ""
    for (i = 1; i <= n; i++) a[i] = val[key, i]
    for (i = 2; i <= n; i++) { v = a[i]; j = i - 1; while (j > 0 && a[j] + 0 > v + 0) { a[j + 1] = a[j]; j-- } a[j + 1] = v }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(c, s, f, v) { if (v == "-" || v == "") return; cnt[c, s, f]++; val[c, s, f, cnt[c, s, f]] = v }
function m(c, s, f) { return median(c SUBSEP s SUBSEP f) }
function has(c, s, f) { return cnt[c, s, f] > 0 }
function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "–" : sprintf("%.2f", a / b) }
function num(v, d) { return (v == "") ? "–" : sprintf("%." d "f", v) }
function ms(v) { return (v == "") ? "–" : (v < 10 ? sprintf("%.3f", v) : sprintf("%.1f", v)) }
function best(s, f, dir,    i, c, v, b) {   # best median among the peers: dir 1 = highest
    b = ""
    for (i = 1; i <= npeers; i++) {
        c = peers[i]; if (!has(c, s, f)) continue
        v = m(c, s, f) + 0
        if (b == "" || (dir > 0 && v > b) || (dir < 0 && v < b)) b = v
    }
    return b
}
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
$col["status"] == "ok" || $col["status"] == "flagged" {
    c = $col["config"]; s = $col["scenario"]
    seen[c] = 1; seen_s[s] = 1
    runs[c, s]++
    if ($col["status"] == "flagged") flagged[c, s]++
    errs[c, s] += $col["errors"]
    split("rps p50_ms p99_ms cpu_client_s cpu_server_s cpu_proxy_s us_per_req rss_mib pss_mib chain_cpu_pct", fs, " ")
    for (k in fs) add(c, s, fs[k], $col[fs[k]])
}
END {
    nc = split("direct tessera haproxy nginx", all, " ")
    for (i = 1; i <= nc; i++) if (all[i] in seen) cfgs[++ncfg] = all[i]
    for (i = 1; i <= nc; i++) if ((all[i] in seen) && all[i] != "direct" && all[i] != "tessera") peers[++npeers] = all[i]
    ns = split("ka-c50 ka16k-c50 ka-c1 close-c50 rate-ka rate-close", alls, " ")
    for (i = 1; i <= ns; i++) if (alls[i] in seen_s) scs[++nsc] = alls[i]
    if (ncfg == 0) { print "No measurements."; exit }

    print "Medians over the interleaved repeats. ×direct and ×best are ratios of the medians; *best* is the best peer pair (HAProxy, nginx) for that figure: highest req/s, lowest latency, CPU and memory. Proxy CPU and memory are the two proxies of a pair together."
    print ""
    print "| scenario | config | req/s | ×direct | ×best | p50 ms | p99 ms | p50 / p99 ×direct | p50 / p99 ×best | errors | proxy CPU s (client + server) | µs/req | µs/req ×best | RSS / PSS MiB | PSS ×best | chain CPU % | runs |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (j = 1; j <= nsc; j++) {
        s = scs[j]
        brps = best(s, "rps", 1); bp50 = best(s, "p50_ms", -1); bp99 = best(s, "p99_ms", -1)
        bupr = best(s, "us_per_req", -1); bpss = best(s, "pss_mib", -1)
        drps = m("direct", s, "rps"); dp50 = m("direct", s, "p50_ms"); dp99 = m("direct", s, "p99_ms")
        for (i = 1; i <= ncfg; i++) {
            c = cfgs[i]; if (!runs[c, s]) continue
            rps = m(c, s, "rps"); p50 = m(c, s, "p50_ms"); p99 = m(c, s, "p99_ms")
            isdirect = (c == "direct")
            cpu = isdirect ? "–" : sprintf("%.2f (%.2f + %.2f)", m(c, s, "cpu_proxy_s"), m(c, s, "cpu_client_s"), m(c, s, "cpu_server_s"))
            upr = isdirect ? "" : m(c, s, "us_per_req")
            mem = isdirect ? "–" : sprintf("%.1f / %.1f", m(c, s, "rss_mib"), m(c, s, "pss_mib"))
            pss = isdirect ? "" : m(c, s, "pss_mib")
            n = runs[c, s] (flagged[c, s] ? " (" flagged[c, s] " flagged)" : "")
            name = (c == "direct" || c == "tessera") ? "**" c "**" : c
            printf "| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", \
                s, name, num(rps, 0), ratio(rps, drps), ratio(rps, brps), ms(p50), ms(p99), \
                ratio(p50, dp50), ratio(p99, dp99), ratio(p50, bp50), ratio(p99, bp99), errs[c, s], cpu, \
                num(upr, 1), ratio(upr, bupr), mem, ratio(pss, bpss), num(m(c, s, "chain_cpu_pct"), 0), n
        }
    }
    if (!("direct" in seen) || ncfg < 2) { printf "\nContended attempts discarded and re-measured: %d (contended.tsv).\n", contended; exit }
    print ""
    print "Latency added over direct, p50 / p99 ms (medians):"
    print ""
    hdr = "| config |"; sep = "|---|"
    for (j = 1; j <= nsc; j++) { hdr = hdr " " scs[j] " |"; sep = sep "---:|" }
    print hdr; print sep
    for (i = 1; i <= ncfg; i++) {
        c = cfgs[i]; if (c == "direct") continue
        line = "| " c " |"
        for (j = 1; j <= nsc; j++) {
            s = scs[j]
            if (!runs[c, s] || !runs["direct", s]) { line = line " – |"; continue }
            line = line sprintf(" %+.3f / %+.3f |", m(c, s, "p50_ms") - m("direct", s, "p50_ms"), m(c, s, "p99_ms") - m("direct", s, "p99_ms"))
        }
        print line
    }
    print ""
    printf "Contended attempts discarded and re-measured: %d (contended.tsv).\n", contended
}' "$runs"

if [ -r "$env" ] && grep -qE '^(check|skipped|failed):' "$env"; then
    echo
    echo "Checks (first start of each config), skipped and failed configs:"
    echo
    grep -E '^(check|skipped|failed):' "$env" | sed -e 's/^check: /- /' -e 's/^skipped: /- **skipped** /' -e 's/^failed: /- **FAILED** /'
fi
