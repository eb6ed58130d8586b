#!/usr/bin/env bash
# Rebuilds the pinned SPIR-V binaries and their manifest hashes:
#   kernels-spirv/build.sh          rebuild (then commit the .spv and manifest.json)
#   kernels-spirv/build.sh check    what CI runs: fresh builds must equal the committed ones
# Uses glslangValidator 12.0.0 and spirv-val from Debian bookworm
# (glslang-tools, spirv-tools); never an optimiser.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p lockstep-kernels --bin lockstep-bundle -- "${1:-build}"
