#!/usr/bin/env bash
# What metrics and interceptors cost, in instructions per unary call: a measure that a shared,
# noisy machine does not move (calls/s there can swing 2x between runs of one build, see
# interceptor-cost.sh). Needs valgrind (callgrind). Configurations, as in interceptor-cost.sh:
#   bare     metrics off on both sides, no interceptor
#   metrics  metrics on (the default), no interceptor
#   icpt     metrics off, one no-op interceptor on each side
#   full     metrics on, one no-op interceptor on each side
# Server side: the server runs under callgrind, counters zeroed after a warm-up, counted over
# one run of the client. Client side: the client runs under callgrind twice (1 s and 1+SECS s)
# against a plain server; the difference over the difference in calls leaves start-up out.
# User-space instructions only: syscalls and the kernel's work are not counted, so the
# ratio of these figures overstates the ratio of calls/s a little.
#
#   Benchmarks/interceptor-instructions.sh                 # bare full, 64 callers
#   CALLERS=1 Benchmarks/interceptor-instructions.sh bare metrics icpt full
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLERS="${CALLERS:-64}"
SECS="${SECS:-3}"
WORK="$(mktemp -d)"
command -v valgrind >/dev/null || { echo "error: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
source "$ROOT/Benchmarks/cost-lib.sh"
# valgrind cannot read the Swift DWARF; symbols are enough.
PROFILED="$WORK/baton"
cp "$BATON" "$PROFILED"
strip -g "$PROFILED"

calls() { sed -n 's/.* calls=\([0-9]*\).*/\1/p'; }
total() { sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$1" | head -1; }
configs=("$@")
[[ ${#configs[@]} -gt 0 ]] || configs=(bare full)

echo "# $("$BATON" --version 2>/dev/null || echo baton), $CALLERS callers, instructions per unary call (callgrind)"
printf '%-8s %10s %10s %10s\n' config server client total
for config in "${configs[@]}"; do
  read -ra f <<<"$(config_flags "$config")"
  start_server valgrind --tool=callgrind --callgrind-out-file="$WORK/server.$config" \
    "$PROFILED" bench server --port 0 --lifetime 600 "${f[@]}"
  "$BATON" bench unary --port "$PORT" --concurrency "$CALLERS" --warmup 0 --seconds 1 "${f[@]}" >/dev/null
  callgrind_control -z "$SERVER" >/dev/null 2>&1
  n=$("$BATON" bench unary --port "$PORT" --concurrency "$CALLERS" --warmup 0 --seconds "$SECS" "${f[@]}" | calls)
  callgrind_control -d "$SERVER" >/dev/null 2>&1
  stop_server
  server=$(( $(total "$(ls "$WORK/server.$config".* | head -1)") / n ))

  start_server "$BATON" bench server --port 0 --lifetime 600 "${f[@]}"
  for run in 1 2; do
    valgrind --tool=callgrind --callgrind-out-file="$WORK/c$run.$config" "$PROFILED" bench unary --port "$PORT" \
      --concurrency "$CALLERS" --warmup 0 --seconds "$(( run == 1 ? 1 : SECS + 1 ))" "${f[@]}" 2>/dev/null >"$WORK/c$run.out"
  done
  stop_server
  client=$(( ($(total "$WORK/c2.$config") - $(total "$WORK/c1.$config")) / ($(calls <"$WORK/c2.out") - $(calls <"$WORK/c1.out")) ))
  printf '%-8s %10d %10d %10d\n' "$config" "$server" "$client" $((server + client))
done
echo "# profiles in $WORK (callgrind_annotate)"
