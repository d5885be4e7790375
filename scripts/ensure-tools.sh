#!/usr/bin/env bash
# Installs the external tools the tests use, when missing: promtool (Debian `prometheus`), openssl and
# curl (the TLS test), chromium (renders the simulation report headless), zip and unzip. With apt-get
# (Debian, Ubuntu) it installs them, and a failed install stops here with apt's reason. Elsewhere it
# says what is missing and exits 3, and scripts/test.sh runs the tests that need those tools as skipped
# (each says so) instead of failing them.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v zip >/dev/null 2>&1 || need+=(zip)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${need[*]} (promtool comes with Prometheus); the tests that need them are skipped" >&2
  exit 3
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing ${need[*]} (Debian packages) for the tests" >&2
$sudo apt-get update -qq >/dev/null 2>&1 || true
log=$(mktemp)
if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >"$log" 2>&1; then
  cat "$log" >&2
  echo "could not install ${need[*]} (apt's reason is above)" >&2
  exit 1
fi
rm -f "$log"
