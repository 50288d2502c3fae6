#!/usr/bin/env bash
# How fast one stopping server hands its resumable streams over: two `baton serve`, N endless
# watch streams (`baton load --method watch`) over both, then SIGTERM to the one carrying the
# most (seen on its /drainz). Prints the
# stopping server's lifecycle lines (drained duration, migrated=N) and the load's summary.
#
#   Benchmarks/watch-drain.sh [BATON] [STREAMS]
set -euo pipefail
baton=${1:-.build/release/baton}
streams=${2:-500}
dir=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
endpoints=()
for i in 1 2; do
  "$baton" serve --port 0 --deadline 30 --health-port 0 >"$dir/serve$i.out" 2>"$dir/serve$i.err" &
  pids+=($!)
  until grep -q '^health' "$dir/serve$i.out" 2>/dev/null; do sleep 0.05; done
  endpoints+=("$(sed -n 's/^listening //p' "$dir/serve$i.out" | head -1)")
done
"$baton" load --endpoints "${endpoints[0]},${endpoints[1]}" --seconds 8 --concurrency "$streams" \
  --method watch --json >"$dir/summary" 2>/dev/null &
load=$!
sleep 4
open_streams() { curl -s "http://$(sed -n 's/^health //p' "$dir/serve$1.out")/drainz" | sed -n 's/.*"open_streams":\([0-9]*\).*/\1/p'; }
first=$(open_streams 1); second=$(open_streams 2)
stop=1; if [ "${second:-0}" -gt "${first:-0}" ]; then stop=2; fi
echo "open streams: server 1 $first, server 2 $second; stopping server $stop"
kill -TERM "${pids[$((stop - 1))]}"
wait "$load" || true
grep -E "draining|drained|stopped" "$dir/serve$stop.err"
tail -1 "$dir/summary"; echo
