#!/usr/bin/env bash
# STREAM end to end, for docs/benchmarks.md: ilp-loadgen stream pays ilpd's
# own receiver account through ilpd (1 worker), all on 127.0.0.1; then, at
# the same packet rate, plain forwarding (ilp-loadgen run, open loop) through
# the same ilpd, so the receiver's cost per packet is set beside a
# forwarded packet's at equal load.
#
#   bash bench/scripts/stream-e2e.sh [rounds] [seconds] [packets-per-payment]
#
# Reports per round: payments/s and packets/s (loadgen's figures), ilpd CPU
# ns per STREAM packet answered by the receiver (process user+sys from /proc
# over ilpd_stream_packets_total), and ilpd CPU ns per fulfilled packet for
# forwarding at the same rate. Build first: cargo build --release --bins.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-10}
per=${3:-12}
amount=12000
conc=${CONC:-16}
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d "${BENCH_DIR:-$PWD/target}/stream-e2e.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); hport=$(free_port); mport=$(free_port)
cat > "$work/ilpd.toml" <<TOML
[node]
address = "test.ilpd"
threads = 1
pin_cores = false
listen = "127.0.0.1:$port"
http_listen = "127.0.0.1:$hport"
metrics_addr = "127.0.0.1:$mport"
log_level = "warn"
durability = "none"
[[accounts]]
id = "send"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "send-token-0123456789"
max_balance = 9000000000000000000
[[accounts]]
id = "recv"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "recv-token-0123456789"
min_balance = -9000000000000000000
[[accounts]]
id = "shop"
relation = "receiver"
asset_code = "USD"
asset_scale = 9
min_balance = -9000000000000000000
TOML

start() {
  "$bin/ilpd" --config "$work/ilpd.toml" 2>>"$work/ilpd.log" &
  pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$hport) 2>/dev/null && break; sleep 0.1; done
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric_sum() { # prefix
  python3 - "$mport" "$1" <<'PY'
import sys, urllib.request
t = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
print(int(sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith(sys.argv[2]))))
PY
}
hz=$(getconf CLK_TCK)

for r in $(seq "$rounds"); do
  start
  "$bin/ilp-loadgen" stream -q --send "btp+ws://send:send-token-0123456789@127.0.0.1:$port/" \
    --spsp "http://127.0.0.1:$hport/shop" --amount $amount --max-packet-amount $((amount / per)) \
    --concurrency "$conc" --duration "${secs}s" \
    --json "$work/stream.json" >/dev/null || true
  t=$(ticks $pid); n=$(metric_sum 'ilpd_stream_packets_total{')
  kill -TERM $pid; wait $pid || true
  read -r pps payps < <(python3 - "$work/stream.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = d["throughput"]
print(round(t["packets_per_s"]), round(t["payments_per_s"], 1))
PY
)
  start
  "$bin/ilp-loadgen" run -q --send "btp+ws://send:send-token-0123456789@127.0.0.1:$port/" \
    --recv "btp+ws://recv:recv-token-0123456789@127.0.0.1:$port/" --rate "$pps" \
    --duration "${secs}s" --warmup 0s --no-pin --json "$work/fwd.json" >/dev/null
  tf=$(ticks $pid)
  kill -TERM $pid; wait $pid || true
  python3 - "$work/fwd.json" "$t" "$n" "$tf" "$hz" "$pps" "$payps" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t, n, tf, hz, pps, payps = (float(x) for x in sys.argv[2:])
fwd = int(d["reconciliation"]["amount_fulfilled_at_sender"])
print(f"payments/s {payps:,.1f}  STREAM packets/s {pps:,.0f}  ilpd CPU ns per STREAM packet {t/hz*1e9/max(n,1):,.0f} ({int(n):,} packets)"
      f"  |  forwarding at {pps:,.0f}/s: ilpd CPU ns per packet {tf/hz*1e9/max(fwd,1):,.0f} ({fwd:,} packets)")
PY
done
