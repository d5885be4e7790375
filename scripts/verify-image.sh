#!/usr/bin/env bash
# Builds the repository's Dockerfile with buildah and checks the image: it runs as a non-root user,
# its HEALTHCHECK passes, it answers GET /readyz and a DPS allocation request (with its key), and it
# refuses one without a key. Needs root, buildah and podman (installed if missing), and base images:
# on a machine without a registry, the local stand-ins of ../shared/tools/local-container-images.sh
# (pass another path with LOCAL_IMAGES=...). IMAGE=name verifies an image built before instead of
# building one. Not run in CI (no container engine there).
set -euo pipefail
cd "$(dirname "$0")/.."
images=${LOCAL_IMAGES:-../shared/tools/local-container-images.sh}
tag=${IMAGE:-localhost/dps-allocator:verify}
name=dps-allocator-verify
port=${PORT:-18080}
key=verify-$RANDOM$RANDOM
store=(--storage-driver vfs)

if [ -z "${IMAGE:-}" ]; then
  if [ -x "$images" ]; then "$images" debian rust distroless; fi
  echo "-- building $tag (log: target/verify-image-build.log)"
  mkdir -p target
  buildah "${store[@]}" bud --isolation chroot --pull=never --format docker -t "$tag" . > target/verify-image-build.log 2>&1 \
    || { tail -30 target/verify-image-build.log; exit 1; }
else
  echo "-- verifying the existing image $tag (IMAGE=...)"
fi

cleanup() { podman "${store[@]}" rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
echo "-- running it"
"$images" run -d --name "$name" --network host \
  -e DPS_ALLOCATOR_LISTEN="127.0.0.1:$port" -e DPS_ALLOCATOR_API_KEY="$key" "$tag" >/dev/null
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done

fail() { echo "FAIL: $*"; podman "${store[@]}" logs "$name" 2>&1 | tail -20; exit 1; }
user=$(podman "${store[@]}" top "$name" user | tail -1 | tr -d ' ')
[ "$user" != root ] && [ "$user" != 0 ] || fail "runs as root"
echo "ok   runs as user $user"
ready=$(curl -fs "http://127.0.0.1:$port/readyz") || fail "/readyz"
echo "ok   GET /readyz: $ready"
body=$(python3 -c 'import json; print(json.dumps(json.load(open("policies/tests/tutorial-toaster.json"))["request"]))')
answer=$(curl -fs "http://127.0.0.1:$port/api/allocate?code=$key" -d "$body") || fail "allocate"
echo "$answer" | grep -q '"iotHubHostName":"contoso-toasters-hub-1098.azure-devices.net"' || fail "unexpected answer $answer"
echo "ok   POST /api/allocate?code=…: $answer"
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/allocate" -d "$body")
[ "$status" = 401 ] || fail "no key answered $status"
echo "ok   without a key: 401"
podman "${store[@]}" healthcheck run "$name" >/dev/null 2>&1 && echo "ok   HEALTHCHECK passes" \
  || echo "note: podman could not run the HEALTHCHECK here (Docker-format healthchecks need podman ≥ 4 and --format docker); the command is /usr/local/bin/dps-allocator healthcheck"
podman "${store[@]}" exec "$name" /usr/local/bin/dps-allocator healthcheck && echo "ok   healthcheck command inside the container exits 0"
echo "image verified: $tag"
