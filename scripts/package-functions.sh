#!/usr/bin/env bash
# Builds the Azure Functions custom-handler package, a zip laid out for zip deploy:
#   host.json, allocate/function.json, dps-allocator (executable), policies/*.toml
#
#   scripts/package-functions.sh [OUT.zip]     (default: target/functions/dps-allocator-functions.zip)
#   POLICIES=/path/to/policies scripts/package-functions.sh    (default: ./policies)
#   GEOIP=/path/to/GeoLite2-City.mmdb scripts/package-functions.sh   (adds it, and --geoip to host.json)
#
# The binary is a static x86_64-unknown-linux-musl build, so it runs on whatever Linux image the Functions
# host uses. Where the musl target or musl-gcc cannot be installed, it falls back to a glibc build and
# says so, with the glibc version the binary needs (Azure's Linux images are Debian 11, glibc 2.31, or 12).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/functions/dps-allocator-functions.zip}
policies=${POLICIES:-policies}
musl=x86_64-unknown-linux-musl
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

have_musl() {
  rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl" >/dev/null 2>&1 || return 1
  command -v musl-gcc >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends musl-tools >/dev/null 2>&1
}

if have_musl; then
  cargo build --release --locked --target "$musl" --bin dps-allocator
  bin=target/$musl/release/dps-allocator
  kind="static (musl)"
else
  cargo build --release --locked --bin dps-allocator
  bin=target/release/dps-allocator
  need=$(objdump -T "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  kind="dynamic (glibc: needs ${need:-unknown})"
  echo "warning: the musl target is unavailable; built against this machine's glibc (${need:-unknown})." >&2
  echo "warning: Azure's Debian 11 images have glibc 2.31: build on Debian 11 if the binary needs newer." >&2
fi

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
cp "$policies"/*.toml "$stage/policies/"
mkdir -p "$(dirname "$out")"
abs_out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$abs_out"
# zip keeps the Unix mode bits (the executable bit) in each entry's external attributes.
(cd "$stage" && zip -q -X -r "$abs_out" .)
echo "$out: $(du -h "$abs_out" | cut -f1), binary $kind"
