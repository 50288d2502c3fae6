#!/usr/bin/env bash
# What metrics and interceptors cost: the same release binary, run alternately
#   bare: metrics off on both sides, no interceptor
#   full: metrics on (the default) on both sides, one no-op interceptor on each side
# for unary calls with 1 and 64 callers. Runs alternate (bare, full, bare, full, ...) so that a
# machine whose speed drifts (a shared VM) affects both alike; each pair gives one ratio, and
# the script prints the medians of each configuration and the median of the ratios.
#
#   Benchmarks/interceptor-cost.sh                  # from anywhere in the repository
#   PAIRS=5 SECS=2 Benchmarks/interceptor-cost.sh
#
# Knobs (default in brackets): PAIRS [9] runs of each configuration per load; SECS [3] measured
# seconds per run, after WARMUP [1]; LOADS ["1 64"] caller counts; BATON [<repo>/.build/release/baton,
# built if missing].
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PAIRS="${PAIRS:-9}"
SECS="${SECS:-3}"
WARMUP="${WARMUP:-1}"
LOADS="${LOADS:-1 64}"
WORK="$(mktemp -d)"
source "$ROOT/Benchmarks/cost-lib.sh"

# one CONFIG CALLERS: one run, prints calls per second.
one() {
  local callers=$2 flags
  read -ra flags <<<"$(config_flags "$1")"
  start_server "$BATON" bench server --port 0 --lifetime 600 "${flags[@]}"
  line=$("$BATON" bench unary --port "$PORT" --concurrency "$callers" --seconds "$SECS" --warmup "$WARMUP" "${flags[@]}")
  stop_server
  sed -n 's/.* rps=\([0-9]*\).*/\1/p' <<<"$line"
}

bare() { one bare "$1"; }
full() { one full "$1"; }

echo "# $("$BATON" --version 2>/dev/null || echo baton), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $PAIRS pairs of ${SECS} s runs"
printf '%-10s %14s %14s %10s  %s\n' callers "bare calls/s" "full calls/s" "full/bare" "ratios"
alternate bare full
