#!/usr/bin/env bash
# The measurements behind README's Benchmarks section: `ringnet bench
# --compare` for echo and accept with the io_uring settings side by side,
# and hold with 9000 connections, the floor and the option sweeps. Not part
# of CI (it takes ~25 minutes and
# wants an otherwise idle 2-CPU machine). Results go to $OUT (default
# target/bench-compare/).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-target/bench-compare}
mkdir -p "$out"
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/ringnet
runs=${RUNS:-3}
dur=${DURATION:-4}

run() {
  local name=$1; shift
  echo "== $name: ringnet bench --compare $*" | tee "$out/$name.txt"
  "$bin" bench --compare "$@" --runs "$runs" --duration "$dur" >> "$out/$name.txt" 2> "$out/$name.log"
  cat "$out/$name.txt"
}

run echo-64                 echo --conns 32 --size 64
run echo-64-fixed-files     echo --conns 32 --size 64 --uring-arg=--fixed-files=16384
run echo-64-coop-taskrun    echo --conns 32 --size 64 --uring-arg=--no-defer-taskrun
run echo-64-batch-wait-50   echo --conns 32 --size 64 --uring-arg=--batch-wait-us=50
run echo-4k                 echo --conns 32 --size 4096
run echo-16k-8              echo --conns 8 --size 16384
run echo-16k-8-buf-16k      echo --conns 8 --size 16384 --uring-arg=--buf-size=16384
run echo-16k-8-bundle       echo --conns 8 --size 16384 --uring-arg=--recv-bundle
run echo-64k-8              echo --conns 8 --size 65536
run echo-64k-8-send-zc      echo --conns 8 --size 65536 --uring-arg=--send-zc-threshold=16384
run accept                  accept --conns 32
run accept-fixed-files      accept --conns 32 --uring-arg=--fixed-files=16384
run accept-coop-taskrun     accept --conns 32 --uring-arg=--no-defer-taskrun
run accept-batch-wait-20    accept --conns 32 --uring-arg=--batch-wait-us=20
run accept-batch-wait-50    accept --conns 32 --uring-arg=--batch-wait-us=50
run hold-9000               hold --conns 9000

# The floor: ringnet on io_uring against the minimal io_uring loop of
# examples/uring_floor.rs, and each io_uring option alone against the
# defaults.
cargo build --release --quiet --example uring_floor
floor="floor=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/uring_floor --addr {addr} --cpu 0"
run floor-echo-64           echo --conns 32 --size 64 --contenders io_uring,floor --against "$floor"
run floor-accept            accept --conns 32 --contenders io_uring,floor --against "$floor"
for mode in echo accept; do
  echo "== sweep-$mode: ringnet bench --sweep $mode" | tee "$out/sweep-$mode.txt"
  "$bin" bench --sweep "$mode" --runs "$runs" --duration "$dur" >> "$out/sweep-$mode.txt" 2> "$out/sweep-$mode.log"
  cat "$out/sweep-$mode.txt"
done
