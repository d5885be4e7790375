#!/usr/bin/env bash
# Fails when BINARY needs a glibc symbol version newer than BASELINE (default 2.28), by its dynamic
# symbol table (objdump -T). A static binary (musl) needs none and passes.
#   scripts/check-glibc.sh BINARY [BASELINE]
set -euo pipefail
bin=$1
baseline=${2:-2.28}
command -v objdump >/dev/null 2>&1 || { echo "objdump is missing (Debian package binutils)" >&2; exit 1; }
if ! objdump -T "$bin" >/dev/null 2>&1; then
  echo "$bin: static (no dynamic symbols): runs on any glibc"
  exit 0
fi
need=$(objdump -T "$bin" | { grep -o 'GLIBC_[0-9][0-9.]*' || true; } | sed 's/GLIBC_//' | sort -uV | tail -1)
if [ -z "$need" ]; then
  echo "$bin: needs no versioned glibc symbol"
  exit 0
fi
if [ "$(printf '%s\n%s\n' "$need" "$baseline" | sort -V | tail -1)" != "$baseline" ]; then
  echo "$bin needs glibc $need, newer than the baseline $baseline:" >&2
  objdump -T "$bin" | grep -E "GLIBC_($need)\b" | head -5 >&2
  exit 1
fi
echo "$bin: needs glibc $need (baseline $baseline)"
