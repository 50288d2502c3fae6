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
