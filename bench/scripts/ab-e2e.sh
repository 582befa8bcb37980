#!/usr/bin/env bash
# Same-run A/B of two ilpd builds end to end, for docs/benchmarks.md: ilpd
# with 1 worker and durability none (the IO and core path alone) under
# ilp-loadgen (1 sender + 1 receiver thread, from build A), all on
# 127.0.0.1, A and B interleaved in every round so noise hits both alike.
#
#   bash bench/scripts/ab-e2e.sh DIR_A DIR_B [rounds] [seconds] [window]
#
# DIR_A/DIR_B hold the release binaries (ilpd, ilp-loadgen) of each build.
# Reports, per build, medians of fulfilled/s (closed loop, window per
# connection, default 4096) and ilpd CPU ns per fulfilled packet (process
# user+sys from /proc over packets), the figure noise disturbs least.
# PIN=0 unpins both sides. THREADS=N runs ilpd with N workers (default 1)
# and loadgen with 2 connections per link, so with N > 1 Forwards also cross
# between workers.
set -euo pipefail
a=$1; b=$2
rounds=${3:-6}
secs=${4:-5}
window=${5:-4096}
pin=${PIN:-1}
threads=${THREADS:-1}
conns=1; [ "$threads" -gt 1 ] && conns=2
ilpd_pin=(); lg_pin=()
if [ "$pin" = 0 ]; then ilpd_pin=(--pin-cores false); lg_pin=(--no-pin); fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/ilpd.toml" <<TOML
[node]
address = "test.ilpd"
threads = $threads
listen = "127.0.0.1:$port"
log_level = "warn"
durability = "none"
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

run() { # name bindir
  local name=$1 dir=$2
  "$dir/ilpd" --config "$work/ilpd.toml" "${ilpd_pin[@]}" 2>>"$work/ilpd.log" &
  local pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  "$a/ilp-loadgen" run -q --send "btp+ws://send:send-token-0123456789@127.0.0.1:$port/" \
    --recv "btp+ws://recv:recv-token-0123456789@127.0.0.1:$port/" --duration "${secs}s" \
    --window "$window" --conns "$conns" --recv-conns "$conns" --json "$work/$name.json" "${lg_pin[@]}" >/dev/null
  local ticks; ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill -TERM $pid; wait $pid || true
  python3 - "$work/$name.json" "$name" "$ticks" "$(getconf CLK_TCK)" >>"$work/results.tsv" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["reconciliation"]["delta"] == "0", "amounts did not reconcile"
packets = int(d["reconciliation"]["amount_fulfilled_at_sender"])  # amount 1 each, warm-up included
cpu_ns = int(sys.argv[3]) / int(sys.argv[4]) * 1e9 / max(packets, 1)
print(f'{sys.argv[2]}\t{d["throughput"]["fulfilled_per_s"]}\t{cpu_ns}')
PY
}

for r in $(seq "$rounds"); do
  if [ $((r % 2)) = 1 ]; then run A "$a"; run B "$b"; else run B "$b"; run A "$a"; fi
done

python3 - "$work/results.tsv" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rate, cpu = line.split("\t")
    rows[name].append((float(rate), float(cpu)))
print("| build | median fulfilled/s | median ilpd CPU ns/packet | CPU ns/packet, all runs |")
print("|---|--:|--:|---|")
for name in ["A", "B"]:
    v = rows[name]
    cpus = sorted(round(x[1]) for x in v)
    print(f"| {name} | {st.median(x[0] for x in v):,.0f} | {st.median(x[1] for x in v):,.0f} | {' '.join(map(str, cpus))} |")
PY
