#!/bin/sh
# CI for the Python SDK: installs ./Clients/python into a fresh venv and runs the whole suite
# (vectors, scripted peer, live against $BATON_BIN, blocking and asyncio) against the
# installed package, from a directory where the source tree is not importable.
#
#   BATON_BIN=/path/to/baton Clients/python/ci.sh
#
# Without BATON_BIN the live tests are skipped and this script fails (CI must run them);
# set BATON_ALLOW_NO_BIN=1 to allow that locally. Exit status: unittest's.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}

if [ -z "${BATON_BIN:-}" ] && [ -z "${BATON_ALLOW_NO_BIN:-}" ]; then
    echo "ci.sh: BATON_BIN must name the baton binary just built" >&2
    exit 2
fi

# A fresh Debian python3 may lack venv/ensurepip (package python3-venv); CI runs as root.
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; }
    else
        echo "ci.sh: $PYTHON has no venv/ensurepip; install python3-venv" >&2
        exit 2
    fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-py-ci.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"

# The in-tree build backend needs nothing from the network (pyproject.toml: requires = []).
"$VPY" -m pip install --quiet --no-index "$HERE"

# Run from an empty directory: `import baton` must find the installed package, not the source.
mkdir "$WORK/run"
cd "$WORK/run"
"$VPY" -c 'import baton, os
print(f"testing baton {baton.__version__} installed at {os.path.dirname(baton.__file__)}")
assert "site-packages" in baton.__file__, baton.__file__'
"$VPY" -m unittest discover -s "$HERE/tests" -t "$HERE/tests" -v
