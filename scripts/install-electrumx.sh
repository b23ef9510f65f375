#!/usr/bin/env bash
# Install the pinned ElectrumX (PyPI package `e-x`, LevelDB engine) into its own venv at
# <repo>/.tools/electrumx-venv and print the path of its `electrumx_server` entry point.
#
# Idempotent: a venv that already imports the pinned versions is left alone. It never touches
# the project venv (.venv): ElectrumX is a test peer run as a subprocess, not a dependency.
# On a fresh Debian 12 machine (as root) it apt-installs python3.11 and its venv module when
# missing, and, only if no plyvel wheel fits this machine, the LevelDB headers and a C++
# compiler to build plyvel. ELECTRUMX_PYTHON overrides the interpreter (default: python3.11).
#
# Everything but the final path goes to stderr, so callers can do
#   server="$(scripts/install-electrumx.sh)"
set -euo pipefail

EX_VERSION="2.0.0"
PLYVEL_VERSION="1.5.1"

repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/.tools/electrumx-venv"
server="$venv/bin/electrumx_server"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "install-electrumx: $*" >&2; }

installed() {
  [ -x "$server" ] && "$venv/bin/python" - "$EX_VERSION" >/dev/null 2>&1 <<'EOF'
import sys

import electrumx
import plyvel  # noqa: F401  (the DB engine must import, not just be listed)

sys.exit(electrumx.__version__ != sys.argv[1])
EOF
}

apt_updated=""
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "need Debian packages $* but not running as root; install them and re-run"
    exit 1
  fi
  if [ -z "$apt_updated" ]; then
    apt-get update -q >&2
    apt_updated=1
  fi
  apt-get install -y -q --no-install-recommends "$@" >&2
}

mkdir -p "$repo/.tools"
# Two concurrent runs (say, two test sessions) must not build the same venv at once.
exec 9>"$repo/.tools/electrumx-venv.lock"
flock 9

if installed; then
  echo "$server"
  exit 0
fi

start=$SECONDS
python="${ELECTRUMX_PYTHON:-python3.11}"
if ! command -v "$python" >/dev/null 2>&1; then
  apt_install python3.11
fi
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  # Debian splits ensurepip out of the interpreter package.
  apt_install "python$pyver-venv"
fi

log "creating $venv with $("$python" --version 2>&1)"
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q)

requirements=("e-x[leveldb]==$EX_VERSION" "plyvel==$PLYVEL_VERSION")
if ! "${pip[@]}" --only-binary plyvel "${requirements[@]}" >&2; then
  # No plyvel wheel for this platform: build it against Debian's LevelDB.
  log "no usable plyvel wheel; building it from source"
  apt_install g++ libleveldb-dev "python$pyver-dev"
  "${pip[@]}" "${requirements[@]}" >&2
fi

if ! installed; then
  log "installed, but $server does not import electrumx $EX_VERSION with plyvel"
  exit 1
fi
log "installed ElectrumX $EX_VERSION in $((SECONDS - start))s"
echo "$server"
