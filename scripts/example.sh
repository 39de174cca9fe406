#!/usr/bin/env bash
# Builds examples/hello into an OCI image tarball, offline: a loopback
# registry serves a busybox base image made from Debian's busybox-static,
# kiln runs the Dockerfile (with its RUN step in a real container through
# runc) and exports the image. Needs root (containers and overlay mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-hello.oci.tar}
work=$(mktemp -d /tmp/kiln-example.XXXXXX)
reg_pid=
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q -p kiln
kiln=target/debug/kiln

# 1. A registry on a free loopback port, storage in the work dir.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

# 2. A busybox base image, built here with no network, pushed there.
bash scripts/busybox-image.sh "$work/busybox-oci"
skopeo copy -q --dest-tls-verify=false "oci:$work/busybox-oci:latest" \
  "docker://127.0.0.1:$port/library/busybox:latest"

# 3. The build.
"$kiln" build --progress plain \
  --frontend dockerfile.v0 \
  --local context=examples/hello --local dockerfile=examples/hello \
  --opt build-arg:BASE="127.0.0.1:$port/library/busybox:latest" \
  --output type=oci,dest="$out",name=docker.io/library/hello:latest

# 4. Look at the result with standard tools.
skopeo inspect "oci-archive:$out" | jq '{Digest, Labels, Env, Layers}'
umoci unpack --image "$work/img:latest" "$work/bundle" >/dev/null 2>&1 || {
  mkdir -p "$work/img" && tar -xf "$out" -C "$work/img" && umoci unpack --image "$work/img:latest" "$work/bundle" >/dev/null
}
echo "--- /etc/greeting in the image:"
cat "$work/bundle/rootfs/etc/greeting"
echo "image written to $out"
