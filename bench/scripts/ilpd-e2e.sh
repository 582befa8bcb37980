#!/usr/bin/env bash
# End-to-end figures for docs/benchmarks.md: ilpd with 1 worker, ilp-loadgen
# with 1 sender + 1 receiver thread, all on 127.0.0.1.
#
#   bash bench/scripts/ilpd-e2e.sh [rounds] [seconds]
#
# For each round it runs, back to back (so noise hits every variant alike):
#   closed loop (window 256) against ilpd --sha256-impl auto      (batched verifier)
#   closed loop (window 256) against ilpd --sha256-impl portable  (sha2 one by one)
#   open loop at 250,000/s (half the 500k target) against ilpd auto, for p99
# and prints the medians. Build first: cargo build --release --bins
# PIN=0 runs ilpd with --pin-cores false and loadgen with --no-pin (on a
# machine shared with other work, pinned threads cannot move off a busy core).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-5}
bin=${CARGO_TARGET_DIR:-target}/release
pin=${PIN:-1}
ilpd_pin=(); lg_pin=()
if [ "$pin" = 0 ]; then ilpd_pin=(--pin-cores false); lg_pin=(--no-pin); fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/ilpd.toml" <<TOML
[node]
address = "test.ilpd"
threads = 1
listen = "127.0.0.1:$port"
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

run() { # name impl loadgen-args...
  local name=$1 impl=$2; shift 2
  "$bin/ilpd" --config "$work/ilpd.toml" --sha256-impl "$impl" "${ilpd_pin[@]}" 2>>"$work/ilpd.log" &
  local pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  "$bin/ilp-loadgen" run -q --send "btp+ws://send:send-token-0123456789@127.0.0.1:$port/" \
    --recv "btp+ws://recv:recv-token-0123456789@127.0.0.1:$port/" --duration "${secs}s" \
    --sha256-impl auto --json "$work/$name.json" "${lg_pin[@]}" "$@" >/dev/null
  kill -TERM $pid; wait $pid || true
  python3 - "$work/$name.json" "$name" >>"$work/results.tsv" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["reconciliation"]["delta"] == "0", "amounts did not reconcile"
print(f'{sys.argv[2]}\t{d["throughput"]["fulfilled_per_s"]}\t{d["latency_ns"]["p99"]}')
PY
}

for r in $(seq "$rounds"); do
  run closed-auto auto --window 256
  run closed-portable portable --window 256
  run open-250k auto --rate 250000
done

python3 - "$work/results.tsv" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rate, p99 = line.split("\t")
    rows[name].append((float(rate), float(p99)))
for name, v in rows.items():
    rates = [x[0] for x in v]; p99s = [x[1] for x in v]
    print(f"{name:16} median fulfilled/s {st.median(rates):>12,.0f}   median p99 {st.median(p99s)/1000:>9.1f} µs   runs {len(v)}  rates {[round(x) for x in rates]}")
a = st.median(x[0] for x in rows["closed-auto"]); p = st.median(x[0] for x in rows["closed-portable"])
print(f"batched (auto) / portable throughput ratio: {a/p:.3f}")
PY
