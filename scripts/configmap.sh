#!/usr/bin/env bash
# Writes deploy/kubernetes/configmap-policies.yaml from policies/*.toml (one key per file), or with
# --check fails when it differs. Run it after changing the shipped policy.
set -euo pipefail
cd "$(dirname "$0")/.."
out=deploy/kubernetes/configmap-policies.yaml
render() {
  cat <<'HEAD'
# The policy directory as a ConfigMap: one key per file. Generated from ../../policies/*.toml by
# scripts/configmap.sh (a test checks they are equal). Edit, then `kubectl apply -k deploy/kubernetes`:
# Kubernetes swaps the mounted files atomically and every replica reloads within seconds.
apiVersion: v1
kind: ConfigMap
metadata:
  name: dps-allocator-policies
  labels:
    app.kubernetes.io/name: dps-allocator
data:
HEAD
  for f in policies/*.toml; do
    echo "  $(basename "$f"): |"
    sed -e 's/^/    /' -e 's/[[:space:]]*$//' "$f"
  done
}
if [ "${1:-}" = "--check" ]; then
  diff -u "$out" <(render) && echo "$out is up to date"
else
  render > "$out"
  echo "wrote $out"
fi
