#!/usr/bin/env bash
# User-space instructions per operation of a server, counted by valgrind's
# callgrind: ringnet on io_uring (or any ringnet binary) against the floor
# (examples/uring_floor.rs), under the same load from `ringnet bench`.
#
# Unlike CPU time, an instruction count does not move with the VM's speed
# from run to run (a few per cent at most, from how completions happen to
# batch under valgrind), so it resolves a change in the server's own code
# that the alternating CPU-time rounds cannot. It says nothing of the
# kernel's part (the server's system calls run natively) nor of cache
# misses. Not part of CI: it needs valgrind and an otherwise idle machine.
#   ci/bench-instructions.sh echo|accept [BIN ...]
# With no BIN: target/release/ringnet and the floor. DURATION (default 4)
# seconds of load each; PORT (default 7421).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?echo|accept}; shift
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 2; }
cargo build --release --quiet --bins --example uring_floor
target=${CARGO_TARGET_DIR:-target}/release
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("$target/ringnet" floor)
port=${PORT:-7421} dur=${DURATION:-4}
case $mode in
  echo) load=(echo --conns 32 --size 64) ;;
  accept) load=(accept --conns 32) ;;
  *) echo "mode: echo|accept" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for bin in "${bins[@]}"; do
  if [ "$bin" = floor ]; then
    cmd=("$target/examples/uring_floor" --addr "127.0.0.1:$port")
  else
    cmd=("$bin" serve echo --addr "127.0.0.1:$port" --workers 1 --backend uring)
  fi
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "${cmd[@]}" \
    >/dev/null 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  ops=$("$target/ringnet" bench "${load[@]}" --addr "127.0.0.1:$port" \
    --duration "$dur" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ops"])')
  # Dump the counts (the server never exits by itself), then stop it.
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 0.5
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  ir=$(grep -h '^totals:' "$tmp"/out* | head -1 | awk '{print $2}')
  python3 -c 'import sys; b,ops,ir=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]); print(f"{b}: {ops} operations, {ir} instructions, {ir/ops:.0f} per operation")' \
    "$bin" "$ops" "$ir"
  rm -f "$tmp"/out*
done
