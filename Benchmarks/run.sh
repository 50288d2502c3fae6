#!/usr/bin/env bash
# Baton beside its two anchors, in one run: a plain-C epoll echo (what loopback allows) and
# grpc-swift-2 (what a Swift user would pick instead). Builds what it needs, runs every load
# against each implementation in turn and prints one table of medians.
#
#   Benchmarks/run.sh                     # from anywhere in the repository
#   REPS=1 SECS=2 IMPLS="c-epoll baton" Benchmarks/run.sh
#
# Knobs (default in brackets):
#   IMPLS ["c-epoll grpc-swift-2 baton"]   which implementations to run
#   LOADS ["unary:1:64 unary:64:64 stream:1:64 stream:1:4096"]   kind:callers:message bytes
#   REPS [3]    runs of each load; the table shows the median (and every run's figure)
#   SECS [5]    measured seconds per run, after WARMUP [1] unmeasured ones
#   BATON [<repo>/.build/release/baton, built with `swift build -c release --product baton`]
#                 a baton binary to measure instead (then nothing is built for it)
#
# Needs: swift, gcc. The first grpc-swift-2 build (Benchmarks/Anchors, its own package) takes
# 5 to 10 minutes on 2 cores; it fetches grpc-swift-2 and grpc-swift-nio-transport.
# Every server binds 127.0.0.1 on a free port and is stopped by its process id.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
IMPLS="${IMPLS:-c-epoll grpc-swift-2 baton}"
LOADS="${LOADS:-unary:1:64 unary:64:64 stream:1:64 stream:1:4096}"
REPS="${REPS:-3}"
SECS="${SECS:-5}"
WARMUP="${WARMUP:-1}"
BUILD_BATON=0
[[ -n "${BATON:-}" ]] || BUILD_BATON=1
BATON="${BATON:-$ROOT/.build/release/baton}"
C_ECHO="$BENCH/Anchors/c-epoll/echo"
GRPC_ECHO="$BENCH/Anchors/.build/release/grpc-echo"
WORK="$(mktemp -d)"

has() { [[ " $IMPLS " == *" $1 "* ]]; }

# ------------------------------------------------------------------------------------- build
if has c-epoll && [[ ! -x "$C_ECHO" || "$BENCH/Anchors/c-epoll/echo.c" -nt "$C_ECHO" ]]; then
  echo "# gcc -O2 Anchors/c-epoll/echo.c"
  gcc -O2 -Wall -o "$C_ECHO" "$BENCH/Anchors/c-epoll/echo.c" -lpthread
fi
if has grpc-swift-2; then
  echo "# swift build -c release in Benchmarks/Anchors (grpc-swift-2; slow the first time)"
  (cd "$BENCH/Anchors" && swift build -c release --scratch-path .build >"$WORK/grpc-build.log" 2>&1) \
    || { tail -30 "$WORK/grpc-build.log"; exit 1; }
fi
if has baton && ((BUILD_BATON)); then
  echo "# swift build -c release --product baton"
  (cd "$ROOT" && swift build -c release --product baton >"$WORK/baton-build.log" 2>&1) \
    || { tail -30 "$WORK/baton-build.log"; exit 1; }
fi

# ----------------------------------------------------------------------------------- servers
SERVER=""
stop_server() {
  [[ -n "$SERVER" ]] || return 0
  kill -TERM "$SERVER" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

client() { # impl -> the command that runs a load against its server
  case "$1" in
    c-epoll) echo "$C_ECHO" ;;
    grpc-swift-2) echo "$GRPC_ECHO" ;;
    baton) echo "$BATON bench" ;;
  esac
}

start_server() { # impl -> sets SERVER and PORT
  local out="$WORK/server-$1.out"
  : >"$out"  # exists before the server writes to it: the loop below reads it at once
  $(client "$1") server --port 0 >"$out" 2>&1 &
  SERVER=$!
  PORT=""
  for _ in $(seq 100); do
    PORT="$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")"
    [[ -n "$PORT" ]] && return 0
    kill -0 "$SERVER" 2>/dev/null || break
    sleep 0.1
  done
  echo "the $1 server did not start:" >&2
  cat "$out" >&2
  exit 1
}

# --------------------------------------------------------------------------------------- run
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')),"\
  "baton at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown); REPS=$REPS SECS=$SECS WARMUP=$WARMUP"
RESULTS="$WORK/results"
: >"$RESULTS"
for rep in $(seq "$REPS"); do
  for impl in $IMPLS; do
    start_server "$impl"
    for load in $LOADS; do
      IFS=: read -r kind callers size <<<"$load"
      args=(--port "$PORT" --seconds "$SECS" --warmup "$WARMUP" --size "$size")
      [[ "$kind" == unary ]] && args+=(--concurrency "$callers")
      limit="$(awk -v s="$SECS" -v w="$WARMUP" 'BEGIN { printf "%d", s + w + 60 }')"
      line="$(timeout "$limit" $(client "$impl") "$kind" "${args[@]}" 2>>"$WORK/clients.err" | grep '^RESULT' || true)"
      echo "# run $rep/$REPS $impl $load: ${line:-no result}"
      echo "$impl $load ${line:-RESULT error=no-result}" >>"$RESULTS"
    done
    stop_server
  done
done

# ------------------------------------------------------------------------------------- table
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }
median() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END {
  if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
group() { # number -> rounded, with thousands separators: 1234567.8 -> 1,234,568
  awk -v n="$1" 'BEGIN { if (n !~ /^[0-9.]+$/) { print n; exit } s = sprintf("%.0f", n); out = ""
    while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    print s out }'
}
figure() { # impl load -> the table cell
  local impl="$1" load="$2" kind lines values=()
  kind="${load%%:*}"
  mapfile -t lines < <(grep -F "$impl $load " "$RESULTS" | cut -d' ' -f3-)
  if [[ "$kind" == unary ]]; then
    local rps=() p50=() p99=()
    for l in "${lines[@]}"; do rps+=("$(field "$l" rps)"); p50+=("$(field "$l" p50_us)"); p99+=("$(field "$l" p99_us)"); done
    local runs=()
    for r in "${rps[@]}"; do runs+=("$(group "$r")"); done
    printf "%s calls/s, p50 %s µs, p99 %s µs [%s]" "$(group "$(median "${rps[@]}")")" "$(group "$(median "${p50[@]}")")" \
      "$(group "$(median "${p99[@]}")")" "${runs[*]}"
  else
    local size="${load##*:}" mps=() mbs=()
    for l in "${lines[@]}"; do mps+=("$(field "$l" msgs_per_s)"); mbs+=("$(field "$l" MB_per_s)"); done
    local runs=()
    if ((size >= 1024)); then
      for r in "${mbs[@]}"; do runs+=("$(group "$r")"); done
      printf "%s MB/s [%s]" "$(group "$(median "${mbs[@]}")")" "${runs[*]}"
    else
      for r in "${mps[@]}"; do runs+=("$(group "$r")"); done
      printf "%s msgs/s [%s]" "$(group "$(median "${mps[@]}")")" "${runs[*]}"
    fi
  fi
}
echo
echo "Medians of $REPS runs of ${SECS} s (each run's figure in brackets); client and server share the machine."
echo
header="| load |"
rule="|---|"
for impl in $IMPLS; do header+=" $impl |"; rule+="---:|"; done
echo "$header"
echo "$rule"
for load in $LOADS; do
  IFS=: read -r kind callers size <<<"$load"
  if [[ "$kind" == unary ]]; then name="unary, $callers caller$([[ $callers == 1 ]] || echo s), $size B"; else name="stream, $size B messages"; fi
  row="| $name |"
  for impl in $IMPLS; do row+=" $(figure "$impl" "$load") |"; done
  echo "$row"
done
if grep -qE ' error=|errors=[1-9]' "$RESULTS"; then
  echo
  echo "Some runs reported errors:"
  grep -E ' error=|errors=[1-9]' "$RESULTS"
  exit 1
fi
rm -rf "$WORK"
