#!/usr/bin/env bash
# The test command of the README: everything a fresh machine needs, then the whole test suite in
# the release profile (one build serves tests, benches and the CLI; debug builds of the numeric
# code are far too slow).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# Real models for the golden tests: found in ../shared/models, or fetched into the cache.
scripts/fetch-models.sh
cargo test --workspace --release "$@"
