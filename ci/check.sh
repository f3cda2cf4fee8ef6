#!/usr/bin/env bash
# The checks CI runs, in order: formatting, lints, the library built without
# its tools, docs, the test suite (the README's test command), then a smoke
# run of the real binary under wrk.
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

step "the library alone: cargo build / clippy --no-default-features"
# Without the `tools` feature the crate is the engine: none of the tools'
# dependencies may be built.
cargo build --no-default-features
cargo clippy --no-default-features --all-targets -- -D warnings
if cargo tree --no-default-features -e normal --prefix none \
    | grep -E '^(clap|tokio|hdrhistogram|serde_json|httparse|env_logger|anyhow) '; then
  echo "a tools dependency is built without the tools feature" >&2
  exit 1
fi

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

step "tests: ci/test.sh (installs the test clients, then cargo test)"
bash ci/test.sh

step "smoke: ringnet serve under nc and wrk"
bash ci/smoke.sh
