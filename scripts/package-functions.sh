#!/usr/bin/env bash
# Builds the Azure Functions custom-handler package, a zip laid out for zip deploy:
#   host.json, allocate/function.json, dps-allocator (executable), policies/ (the whole policy directory,
#   subdirectories such as fences/ included, less its tests/ fixtures)
#
#   scripts/package-functions.sh [OUT.zip]     (default: target/functions/dps-allocator-functions.zip)
#   POLICIES=/path/to/policies scripts/package-functions.sh    (default: ./policies)
#   GEOIP=/path/to/GeoLite2-City.mmdb scripts/package-functions.sh   (adds it, and --geoip to host.json)
#
# The binary must start on whatever Linux image the Functions host runs: Debian 11 (glibc 2.31), Debian 12
# (2.36) or CBL-Mariner 2.0 (2.35), by the Dockerfiles of Azure/azure-functions-docker (host/4/*). So it
# is either a static x86_64-unknown-linux-musl build (when that target and musl-gcc are installed), or a
# glibc build linked against the glibc 2.28 baseline with cargo-zigbuild (zig from PyPI's `ziglang`, in
# the project's venv; cargo-zigbuild from crates.io). FUNCTIONS_BUILD=musl or =zig chooses. Either way the
# binary is checked: no glibc symbol newer than 2.28 (scripts/check-glibc.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/functions/dps-allocator-functions.zip}
policies=${POLICIES:-policies}
musl=x86_64-unknown-linux-musl
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

baseline=2.28

have_musl() {
  rustup target list --installed 2>/dev/null | grep -qx "$musl" || return 1
  command -v musl-gcc >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends musl-tools >/dev/null 2>&1
}

build=${FUNCTIONS_BUILD:-}
if [ -z "$build" ]; then
  if have_musl; then build=musl; else build=zig; fi
fi
case $build in
  musl)
    have_musl || { echo "FUNCTIONS_BUILD=musl: the $musl target or musl-gcc is not installed" >&2; exit 1; }
    cargo build --release --locked --target "$musl" --bin dps-allocator
    bin=target/$musl/release/dps-allocator
    kind="static (musl)"
    ;;
  zig)
    source scripts/pytools.sh
    pytools_install ziglang
    if ! command -v cargo-zigbuild >/dev/null 2>&1; then
      echo "installing cargo-zigbuild from crates.io" >&2
      cargo install --locked --quiet cargo-zigbuild
    fi
    cargo zigbuild --release --locked --target "x86_64-unknown-linux-gnu.$baseline" --bin dps-allocator
    bin=target/x86_64-unknown-linux-gnu/release/dps-allocator
    kind="dynamic (glibc $baseline baseline, cargo-zigbuild)"
    ;;
  *) echo "FUNCTIONS_BUILD must be musl or zig" >&2; exit 2 ;;
esac
scripts/check-glibc.sh "$bin" "$baseline"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp deploy/azure-functions/host.json "$stage/"
if [ -n "${GEOIP:-}" ]; then
  cp "$GEOIP" "$stage/$(basename "$GEOIP")"
  python3 - "$stage/host.json" "$(basename "$GEOIP")" <<'PY'
import json, sys
path, db = sys.argv[1], sys.argv[2]
host = json.load(open(path))
host["customHandler"]["description"]["arguments"] += ["--geoip", db]
json.dump(host, open(path, "w"), indent=2)
PY
fi
mkdir "$stage/allocate" "$stage/policies"
cp deploy/azure-functions/allocate/function.json "$stage/allocate/"
install -m 0755 "$bin" "$stage/dps-allocator"
strip "$stage/dps-allocator" 2>/dev/null || true
# The whole policy directory (links followed: a ConfigMap-style ..data link is copied as files), less the
# fixtures; then the packaged copy is checked with the packaged binary, so a package whose policy does not
# load (a fence left behind, say) is never built.
[ -d "$policies" ] || { echo "POLICIES=$policies: not a directory" >&2; exit 2; }
cp -RL "$policies/." "$stage/policies/"
rm -rf "$stage/policies/tests"
if ! "$stage/dps-allocator" check "$stage/policies" >"$stage/check.out" 2>&1; then
  sed 's/^/  /' "$stage/check.out" >&2
  echo "the packaged policy directory does not load (dps-allocator check, above): no package built" >&2
  exit 1
fi
rm -f "$stage/check.out"
mkdir -p "$(dirname "$out")"
abs_out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$abs_out"
# zip keeps the Unix mode bits (the executable bit) in each entry's external attributes.
(cd "$stage" && zip -q -X -r "$abs_out" .)
echo "$out: $(du -h "$abs_out" | cut -f1), binary $kind"
