#!/usr/bin/env bash
# What the web console's browser test (tests/it/console.rs) needs beyond the Rust toolchain:
# Debian's headless `chromium`, and `node` with `npm` to run playwright-core (installed by the
# test itself with `npm ci` from the committed lock file). Each is installed from Debian's
# packages only when missing; run as root or with sudo. Called by .ci/run, and by the test when
# it finds either missing.
set -euo pipefail

missing=()
[ -x "${SLUICE_CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install.sh: ${missing[*]} missing and neither root nor sudo: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  sudo="sudo"
fi
echo "install.sh: installing ${missing[*]} from Debian's packages" >&2
log=$(mktemp)
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
