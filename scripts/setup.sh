#!/usr/bin/env bash
# Installs what kiln's builds and tests need on a fresh Debian bookworm machine
# (as root): the OCI runtime, the tools the tests check images with, a
# registry for loopback tests, busybox for offline base images, and the Rust
# target the built-in frontends compile to.
set -euo pipefail

need=(runc busybox-static docker-registry skopeo umoci jq git curl ca-certificates openssh-client openssh-server)
missing=()
for p in "${need[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
for c in rustfmt clippy; do
  rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done
echo "setup: runc $(runc --version | head -1 | awk '{print $3}'), skopeo, umoci, docker-registry, busybox-static, wasm32-wasip2 ready"
