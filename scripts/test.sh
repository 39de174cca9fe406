#!/usr/bin/env bash
# Runs every test of the workspace: unit, conformance, golden, sandbox and
# end-to-end (real containers through runc, a loopback registry).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p kiln
cargo test --workspace "$@"
