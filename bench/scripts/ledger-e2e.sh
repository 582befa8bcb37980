#!/usr/bin/env bash
# The durable ledger's cost end to end, for docs/benchmarks.md: ilpd with 1
# worker under ilp-loadgen (1 sender + 1 receiver thread), all on 127.0.0.1,
# with durability none, os and fsync interleaved in every round.
#
#   bash bench/scripts/ledger-e2e.sh [rounds] [seconds] [window]
#
# Per round and mode: a closed-loop run (window per connection, default
# 1024) for throughput, then an open-loop run at RATE/s (default 100000) for
# latency. Reports medians of: fulfilled/s, ilpd CPU ns per fulfilled packet
# (process user+sys over packets, from /proc), journal bytes per packet (the
# journal's own counter), p50/p99 latency of the open-loop run.
# Build first: cargo build --release --bins. PIN=0 unpins both sides.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-5}
window=${3:-1024}
rate=${RATE:-100000}
bin=${CARGO_TARGET_DIR:-target}/release
pin=${PIN:-1}
ilpd_pin=(); lg_pin=()
if [ "$pin" = 0 ]; then ilpd_pin=(--pin-cores false); lg_pin=(--no-pin); fi
# The journal on a real disk (not tmpfs), beside the checkout.
work=$(mktemp -d "${BENCH_DIR:-$PWD/target}/ledger-e2e.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); mport=$(free_port)
cat > "$work/ilpd.toml" <<TOML
[node]
address = "test.ilpd"
threads = 1
listen = "127.0.0.1:$port"
metrics_addr = "127.0.0.1:$mport"
log_level = "warn"
[[accounts]]
id = "send"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "send-token-0123456789"
[[accounts]]
id = "recv"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "recv-token-0123456789"
TOML

run() { # name mode loadgen-args...
  local name=$1 mode=$2; shift 2
  rm -rf "$work/data"
  "$bin/ilpd" --config "$work/ilpd.toml" --durability "$mode" --data-dir "$work/data" \
    "${ilpd_pin[@]}" 2>>"$work/ilpd.log" &
  local pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  "$bin/ilp-loadgen" run -q --send "btp+ws://send:send-token-0123456789@127.0.0.1:$port/" \
    --recv "btp+ws://recv:recv-token-0123456789@127.0.0.1:$port/" --duration "${secs}s" \
    --json "$work/$name.json" "${lg_pin[@]}" "$@" >/dev/null
  local ticks; ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local jbytes; jbytes=$(python3 - "$mport" <<'PY'
import sys, urllib.request
t = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
print(sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith("ilpd_journal_bytes_total{")))
PY
)
  kill -TERM $pid; wait $pid || true
  python3 - "$work/$name.json" "$name" "$ticks" "$(getconf CLK_TCK)" "$jbytes" >>"$work/results.tsv" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["reconciliation"]["delta"] == "0", "amounts did not reconcile"
packets = int(d["reconciliation"]["amount_fulfilled_at_sender"])  # amount 1 each, warm-up included
cpu_ns = int(sys.argv[3]) / int(sys.argv[4]) * 1e9 / max(packets, 1)
jb = float(sys.argv[5]) / max(packets, 1)
l = d["latency_ns"]
print(f'{sys.argv[2]}\t{d["throughput"]["fulfilled_per_s"]}\t{cpu_ns}\t{jb}\t{l["p50"]}\t{l["p99"]}')
PY
}

for r in $(seq "$rounds"); do
  for mode in none os fsync; do
    run "closed-$mode" "$mode" --window "$window"
    run "open-$mode" "$mode" --rate "$rate"
  done
done

python3 - "$work/results.tsv" "$window" "$rate" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, *v = line.split("\t")
    rows[name].append([float(x) for x in v])
med = lambda name, i: st.median(x[i] for x in rows[name])
print(f"closed loop, window {sys.argv[2]}; open loop at {int(sys.argv[3]):,}/s; medians of {len(rows['closed-none'])} rounds")
print("| mode | fulfilled/s (closed) | vs none | ilpd CPU ns/packet (closed) | journal B/packet | p50 open (µs) | p99 open (µs) |")
print("|---|---|---|---|---|---|---|")
base = med("closed-none", 0)
for m in ["none", "os", "fsync"]:
    c, o = f"closed-{m}", f"open-{m}"
    print(f"| {m} | {med(c,0):,.0f} | {med(c,0)/base:.2f} | {med(c,1):,.0f} | {med(c,2):.1f} | {med(o,3)/1000:,.0f} | {med(o,4)/1000:,.0f} |")
print("runs (fulfilled/s):", {k: [round(x[0]) for x in v] for k, v in rows.items() if k.startswith("closed")})
PY
