# Shared by interceptor-cost.sh and interceptor-instructions.sh (sourced, not run): the release
# binary, the configurations they compare, and a server started and stopped around each run.
# Expects ROOT and WORK to be set; sets BATON, and SERVER and PORT while a server runs.

BATON="${BATON:-$ROOT/.build/release/baton}"
if [[ ! -x "$BATON" ]]; then
  echo "# swift build -c release --product baton"
  (cd "$ROOT" && swift build -c release --product baton >"$WORK/build.log" 2>&1) || { tail -30 "$WORK/build.log"; exit 1; }
fi

# config_flags NAME: the flags of a configuration, the same for `bench server` and `bench unary`.
#   bare     metrics off on both sides, no interceptor
#   metrics  metrics on (the default), no interceptor
#   icpt     metrics off, one no-op interceptor on each side
#   full     metrics on, one no-op interceptor on each side
config_flags() {
  case $1 in
    bare) echo "--no-metrics" ;;
    metrics) echo "" ;;
    icpt) echo "--no-metrics --interceptor" ;;
    full) echo "--interceptor" ;;
    *) echo "error: unknown configuration '$1'" >&2; exit 2 ;;
  esac
}

SERVER=""
stop_server() {
  [[ -n "$SERVER" ]] || return 0
  kill -TERM "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
}
trap stop_server EXIT

# start_server CMD...: runs a server command (`baton bench server --port 0 ...`, maybe under
# valgrind) and sets PORT from its `listening` line; gives up after 60 s.
start_server() {
  "$@" >"$WORK/server.out" 2>&1 &
  SERVER=$!
  for _ in $(seq 1200); do
    PORT=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/server.out")
    [[ -n "$PORT" ]] && return 0
    sleep 0.05
  done
  echo "error: the server did not start" >&2
  cat "$WORK/server.out" >&2
  exit 1
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# alternate RUN_A RUN_B: for each caller count in LOADS, PAIRS runs of each function in turn
# (A, B, A, B, ...: a machine whose speed drifts affects both alike); each is called with the
# caller count and prints calls/s. Prints a row per load: both medians, the median B/A ratio of
# the pairs, and every ratio.
alternate() {
  local callers a b
  for callers in $LOADS; do
    : >"$WORK/a"
    : >"$WORK/b"
    : >"$WORK/ratio"
    for _ in $(seq "$PAIRS"); do
      a=$("$1" "$callers")
      b=$("$2" "$callers")
      echo "$a" >>"$WORK/a"
      echo "$b" >>"$WORK/b"
      awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f\n", b / a }' >>"$WORK/ratio"
    done
    printf '%-10s %14s %14s %10s  %s\n' "$callers" "$(median <"$WORK/a")" "$(median <"$WORK/b")" \
      "$(median <"$WORK/ratio")" "$(sort -n "$WORK/ratio" | tr '\n' ' ')"
  done
}
