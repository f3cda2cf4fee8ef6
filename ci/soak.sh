#!/usr/bin/env bash
# Soak: hold ~9000 connections with mixed traffic against one server for a
# chosen time, then report errors, RSS drift and the descriptor count.
#
#   bash ci/soak.sh [MINUTES] [BACKEND]      # defaults: 10, auto
#
# Not part of CI. Traffic, all on loopback, each load in its own process:
#   - 8500 idle connections held, then checked to still echo (bench hold);
#   - 32 connections of 512-byte echo round trips (bench echo);
#   - 8 loops of connect / 16 bytes / reset (bench accept).
# The server's RSS and descriptor count are sampled every minute. Fails if any
# load reported an error or the server kept descriptors after the clients left.
set -euo pipefail
cd "$(dirname "$0")/.."
mins=${1:-10}
backend=${2:-auto}
secs=$((mins * 60))
out=${OUT:-target/soak}
mkdir -p "$out"
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/ringnet

"$bin" serve echo --addr 127.0.0.1:0 --workers 2 --backend "$backend" > "$out/server.out" 2> "$out/server.err" &
srv=$!
trap 'kill -TERM $srv 2>/dev/null || true; wait $srv 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  line=$(head -n 1 "$out/server.out" 2>/dev/null || true)
  [ -n "$line" ] && break
  sleep 0.05
done
addr=$(echo "$line" | awk '{for (i = 1; i < NF; i++) if ($i == "on") print $(i + 1)}')
[ -n "$addr" ] || { echo "server did not start: $(cat "$out/server.err")" >&2; exit 1; }
echo "soak: $line; $mins min"

rss() { awk '/VmRSS/ {print $2}' "/proc/$srv/status"; }
fds() { ls "/proc/$srv/fd" | wc -l; }
fds_idle=$(fds)
rss_idle=$(rss)

"$bin" bench hold --addr "$addr" --conns 8500 --duration "$secs" --timeout 30 > "$out/hold.txt" 2>&1 & hold=$!
"$bin" bench echo --addr "$addr" --conns 32 --size 512 --duration "$secs" --warmup 0 > "$out/echo.txt" 2>&1 & echo_pid=$!
"$bin" bench accept --addr "$addr" --conns 8 --duration "$secs" --warmup 0 > "$out/accept.txt" 2>&1 & accept_pid=$!

printf '%8s %10s %8s\n' "minute" "RSS KiB" "fds"
rss_first=""
for m in $(seq 1 "$mins"); do
  sleep 60
  r=$(rss); f=$(fds)
  [ -n "$rss_first" ] || rss_first=$r
  rss_last=$r
  printf '%8s %10s %8s\n' "$m" "$r" "$f"
done
wait $hold || true
wait $echo_pid || true
wait $accept_pid || true
sleep 3
fds_end=$(fds)
rss_end=$(rss)

errors() { awk '$1 == "errors" || $1 == "mismatches" {s += $2} END {print s + 0}' "$1"; }
e_hold=$(errors "$out/hold.txt"); e_echo=$(errors "$out/echo.txt"); e_accept=$(errors "$out/accept.txt")
held=$(awk '/held conns echoing/ {print $4 " of " $6}' "$out/hold.txt")
rt=$(awk '/round trips/ {print $3}' "$out/echo.txt")
conns=$(awk '$1 == "connections" {print $2}' "$out/accept.txt")

echo
echo "soak summary ($mins min, $(echo "$line" | sed 's/.*(\(.*\))/\1/'))"
echo "  held connections still echoing at the end: $held"
echo "  echo: $rt round trips; accept: $conns connections"
echo "  errors: hold $e_hold, echo $e_echo, accept $e_accept"
echo "  server RSS: idle $rss_idle KiB, after minute 1 $rss_first KiB, last minute $rss_last KiB (drift $((rss_last - rss_first)) KiB), after the clients left $rss_end KiB"
echo "  server fds: idle $fds_idle, after the clients left $fds_end"
fail=0
[ $((e_hold + e_echo + e_accept)) -eq 0 ] || { echo "soak: errors reported" >&2; fail=1; }
[ "$fds_end" -le "$fds_idle" ] || { echo "soak: descriptors left behind" >&2; fail=1; }
exit $fail
