#!/usr/bin/env bash
# Run the real binary the way a newcomer would: `serve echo` answered through
# nc, `serve http` driven by wrk with no errors allowed. Installs nc and wrk
# from Debian's packages when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/ringnet
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "server on port $1 did not come up" >&2
  return 1
}

"$bin" serve echo --addr 127.0.0.1:17000 & pids+=($!)
wait_port 17000
got=$(printf 'hello ringnet\n' | timeout 5 nc -q 1 127.0.0.1 17000 || true)
[ "$got" = "hello ringnet" ] || { echo "echo via nc failed: got '$got'" >&2; exit 1; }
echo "nc echo: ok"

"$bin" serve http --addr 127.0.0.1:17080 & pids+=($!)
wait_port 17080
out=$(wrk -t 1 -c 64 -d 3s http://127.0.0.1:17080/)
echo "$out"
if echo "$out" | grep -qE 'Socket errors|Non-2xx'; then
  echo "wrk reported errors" >&2
  exit 1
fi
echo "wrk: no errors"

# SIGTERM must stop the server cleanly (exit status 0).
for p in "${pids[@]}"; do kill -TERM "$p"; done
for p in "${pids[@]}"; do wait "$p"; done
pids=()
echo "SIGTERM: clean exit"
