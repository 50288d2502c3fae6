#!/usr/bin/env bash
# A frozen server under load: three `baton serve`, `baton load` over all three, and one server
# stopped with SIGSTOP for 8 s (then SIGCONT). Prints the per-second progress lines of the load
# and its summary; the figure is calls per second during the fault against before it.
#
#   Benchmarks/frozen-server.sh [BATON] [EXTRA LOAD OPTIONS...]
set -euo pipefail
baton=${1:-.build/release/baton}
shift || true
dir=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -KILL "$pid" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

endpoints=()
for i in 1 2 3; do
  "$baton" serve --port 0 >"$dir/serve$i.out" 2>/dev/null &
  pids+=($!)
  until grep -q '^listening' "$dir/serve$i.out" 2>/dev/null; do sleep 0.05; done
  endpoints+=("$(sed -n 's/^listening //p' "$dir/serve$i.out" | head -1)")
done
list=$(IFS=,; echo "${endpoints[*]}")
echo "servers: $list; freezing ${endpoints[0]} (pid ${pids[0]}) from t=4s to t=12s"

"$baton" load --endpoints "$list" --seconds 16 --concurrency 16 --timeout 2 "$@" >"$dir/summary" 2>"$dir/progress" &
load=$!
sleep 4
kill -STOP "${pids[0]}"
sleep 8
kill -CONT "${pids[0]}"
wait "$load" || true
cat "$dir/progress"
cat "$dir/summary"
