#!/usr/bin/env bash
# Two builds of `baton` side by side: unary calls, the binaries run alternately (A, B, A, B, ...)
# so that a machine whose speed drifts (a shared VM) affects both alike. Each pair gives one B/A
# ratio; the script prints each binary's median calls/s and the median and spread of the ratios.
# For a before/after on a hot path, or a build option (for example --static-swift-stdlib).
#
#   Benchmarks/binary-pair.sh OLD/baton NEW/baton
#   PAIRS=14 LOADS=64 FLAGS=--no-metrics Benchmarks/binary-pair.sh A B
#
# Knobs (default in brackets): PAIRS [7] runs of each binary per load; SECS [3] measured seconds
# per run, after WARMUP [1]; LOADS ["1 64"] caller counts; FLAGS [""] flags for both
# `bench server` and `bench unary` (for example --no-metrics).
set -euo pipefail

[[ $# -eq 2 && -x "$1" && -x "$2" ]] || { echo "usage: $0 BATON_A BATON_B (two executables)" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PAIRS="${PAIRS:-7}"
SECS="${SECS:-3}"
WARMUP="${WARMUP:-1}"
LOADS="${LOADS:-1 64}"
read -ra FLAGS <<<"${FLAGS:-}"
WORK="$(mktemp -d)"
A="$1"
B="$2"
BATON="$A"  # cost-lib.sh builds nothing when BATON names an executable
source "$ROOT/Benchmarks/cost-lib.sh"

# one BINARY CALLERS: one run against a server of the same binary; prints calls per second.
one() {
  start_server "$1" bench server --port 0 --lifetime 600 "${FLAGS[@]}"
  line=$("$1" bench unary --port "$PORT" --concurrency "$2" --seconds "$SECS" --warmup "$WARMUP" "${FLAGS[@]}")
  stop_server
  sed -n 's/.* rps=\([0-9]*\).*/\1/p' <<<"$line"
}

first() { one "$A" "$1"; }
second() { one "$B" "$1"; }

echo "# A=$A, B=$B, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $PAIRS pairs of ${SECS} s runs, flags '${FLAGS[*]}'"
printf '%-10s %14s %14s %10s  %s\n' callers "A calls/s" "B calls/s" "B/A" "ratios"
alternate first second
