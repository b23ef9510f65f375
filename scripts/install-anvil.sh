#!/usr/bin/env bash
# Install the pinned anvil (Foundry's local EVM node, from the npm registry) into <repo>/.tools
# and print the path of its binary on stdout (all other output goes to stderr), e.g.
#   ANVIL_BIN="$(scripts/install-anvil.sh)"
# Idempotent: does nothing when that version is already installed. Needs npm; on Debian, as
# root, installs nodejs and npm with apt-get when npm is missing.
set -euo pipefail

ANVIL_VERSION="1.7.1"
PACKAGE="@foundry-rs/anvil-linux-amd64"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="$repo_root/.tools"
anvil_bin="$tools_dir/node_modules/$PACKAGE/bin/anvil"

log() { echo "install-anvil: $*" >&2; }

installed_version() {
    # `anvil --version` prints "anvil Version: 1.7.1" on its first line.
    [[ -x "$anvil_bin" ]] || return 0
    "$anvil_bin" --version 2>/dev/null | sed -n 's/^anvil Version: *\([^ ]*\).*/\1/p' | head -n 1
}

if [[ "$(installed_version)" == "$ANVIL_VERSION" ]]; then
    echo "$anvil_bin"
    exit 0
fi

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
    log "$PACKAGE is for Linux x86_64 only, this is $(uname -s)-$(uname -m)"
    exit 1
fi

if ! command -v npm >/dev/null 2>&1; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "npm not found: installing nodejs and npm with apt-get"
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm >&2
    else
        log "npm not found: install Node.js and npm (Debian: apt-get install nodejs npm), then rerun"
        exit 1
    fi
fi

log "installing $PACKAGE@$ANVIL_VERSION into $tools_dir"
mkdir -p "$tools_dir"
npm install --prefix "$tools_dir" --save-exact --no-audit --no-fund --loglevel=error \
    "$PACKAGE@$ANVIL_VERSION" >&2

version="$(installed_version)"
if [[ "$version" != "$ANVIL_VERSION" ]]; then
    log "expected anvil $ANVIL_VERSION at $anvil_bin, found '${version:-nothing}'"
    exit 1
fi
echo "$anvil_bin"
