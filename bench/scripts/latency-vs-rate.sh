#!/usr/bin/env bash
# Makes docs/img/latency-vs-rate.png (and .json): open-loop rate sweeps of
# ilp-loadgen direct and through ilpd. Builds the release binaries, puts
# matplotlib (pinned) in a venv under the target folder, runs the sweep.
# Takes about 2 minutes; run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p ilpd-loadgen -p ilpd-engine --bins
VENV="$TARGET/plot-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "matplotlib==3.11.2"
fi
exec "$VENV/bin/python" bench/scripts/latency_vs_rate.py --bin-dir "$TARGET/release" "$@"
