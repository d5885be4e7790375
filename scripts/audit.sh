#!/usr/bin/env bash
# Supply-chain check (run by .ci/run): cargo deny over Cargo.lock with deny.toml: licences, banned crates,
# sources, and the RustSec advisories whenever the advisory database can be fetched from github.com.
# Installs cargo-deny from crates.io when missing (a debug build: it compiles in half the time and the
# check takes a second either way).
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$version"; then
  echo "installing cargo-deny $version from crates.io" >&2
  cargo install --locked --debug --quiet cargo-deny --version "$version"
fi
if timeout 120 cargo deny --log-level error fetch db >/dev/null 2>&1; then
  cargo deny --log-level warn check advisories bans licenses sources
else
  echo "advisories: NOT CHECKED: the RustSec advisory database (github.com/RustSec/advisory-db) cannot be fetched from this network" >&2
  cargo deny --log-level warn check bans licenses sources
fi
