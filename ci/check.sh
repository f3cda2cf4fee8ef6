#!/usr/bin/env bash
# The checks CI runs, in order: formatting, lints, docs, the test suite (the
# README's test command), then a smoke run of the real binary under wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain"
cargo --version
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$comp"
  fi
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

step "tests: cargo test"
cargo test

step "smoke: ringnet serve under nc and wrk"
bash ci/smoke.sh
