#!/usr/bin/env bash
# Compare two ringnet binaries (say, main before and after a change) on one
# workload: each serves on CPU 0 with one worker, the load runs on CPU 1 from
# the second binary, the two alternate for $RUNS rounds, and the medians of
# server CPU per operation (and, for hold, RSS per connection) are printed
# with their ratio. Not part of CI: it wants an otherwise idle machine.
#   ci/bench-ab.sh OLD_BIN NEW_BIN echo|accept|hold [extra bench args...]
# BACKEND (default uring), RUNS (default 5), DURATION (default 4).
set -euo pipefail
old=$1 new=$2 mode=$3; shift 3
backend=${BACKEND:-uring} runs=${RUNS:-5} dur=${DURATION:-4}
port=${PORT:-7311}
case $mode in
  echo) load=(echo --conns 32 --size 64) field=server_cpu_per_op_us ;;
  accept) load=(accept --conns 32) field=server_cpu_per_op_us ;;
  hold) load=(hold --conns 9000) field=server_rss_per_conn ;;
  *) echo "mode: echo|accept|hold" >&2; exit 2 ;;
esac

one() { # bin -> prints the figure
  local bin=$1 pid out; shift
  "$bin" serve echo --addr "127.0.0.1:$port" --workers 1 --cpus 0 --backend "$backend" \
    >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  out=$("$new" bench "${load[@]}" "$@" --addr "127.0.0.1:$port" --pid "$pid" --cpu 1 \
    --duration "$dur" --json 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get(sys.argv[2]))' "$out" "$field"
}

declare -a a b
for i in $(seq "$runs"); do
  a+=("$(one "$old" "$@")")
  b+=("$(one "$new" "$@")")
  echo "round $i: old ${a[-1]}  new ${b[-1]}"
done
python3 - "$field" "${a[*]}" "${b[*]}" <<'PY'
import statistics, sys
field, a, b = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
ma, mb = statistics.median(a), statistics.median(b)
# Old and new run back to back in each round: the median of the rounds'
# ratios is steadier than the ratio of the medians when the machine's speed
# flips between runs.
paired = statistics.median(y / x for x, y in zip(a, b))
print(f"{field}: old median {ma:.3f}, new median {mb:.3f}, new/old {mb/ma:.3f}; median of round ratios {paired:.3f}")
PY
