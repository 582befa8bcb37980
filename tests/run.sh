#!/usr/bin/env bash
# The project's whole test command (README "Run the tests"; CI runs exactly this).
# Formatting, lints with warnings denied, then every test in the workspace,
# including the interop tests against the pinned JavaScript reference stack.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f tests/interop/package-lock.json ]; then
  echo "== npm ci (tests/interop: pinned JavaScript peers)"
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (release binaries used by the cross-process tests)"
cargo build --release --bins
echo "== cargo test"
cargo test --workspace -- --test-threads=2
