#!/usr/bin/env bash
# The prepared check for whoever is lent a real GPU: run it as is, on the
# GPU machine, from the repository root. It builds nothing: it takes the
# release binaries (default target/release; build them beforehand with
# `cargo build --release --locked -p lockstep-cli -p lockstep-certify -p lockstep-fleet`)
# and, in well under 5 minutes, prints:
#
#   1. `lockstep devices` (float controls, limits, which bundle variant loads),
#   2. the full certification suite on the default device (a throw-away
#      certifier key; the report and its diagnosis go to $OUT),
#   3. the bench figures (matmul GFLOP/s on Vulkan and the CPU reference),
#   4. the MLP example's speed resident and op by op, traced and not, against
#      the CPU reference (hwtests/exec-modes.sh),
#   5. each example program's trace root on Vulkan against the CPU
#      reference, and whether every output is bit-identical.
#
# Usage: hwtests/gpu-check.sh [BIN_DIR]     (results in ${OUT:-target/gpu-check})
# Exit 0 only if the device certified and every example matched.
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release}"
out="${OUT:-target/gpu-check}"
mkdir -p "$out"
for b in lockstep lockstep-certify; do
    [ -x "$bin/$b" ] || { echo "gpu-check: $bin/$b is missing: build the release binaries first (cargo build --release --locked -p lockstep-cli -p lockstep-certify -p lockstep-fleet)"; exit 2; }
done
status=0
step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }
start=$(date +%s)

step "machine"
uname -srm
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"

step "lockstep devices"
timeout 30 "$bin/lockstep" devices || status=1

step "certification suite (lockstep-certify, default device, 3 stability repeats)"
keydir=$(mktemp -d)
trap 'rm -rf "$keydir"' EXIT
if command -v minisign >/dev/null; then
    minisign -G -W -p "$keydir/c.pub" -s "$keydir/c.key" >/dev/null
elif [ -x "$bin/lockstep-fleet" ]; then
    "$bin/lockstep-fleet" --dir "$keydir" init --unencrypted >/dev/null 2>&1 && mv "$keydir/operator.key" "$keydir/c.key"
fi
if [ -f "$keydir/c.key" ]; then
    timeout 180 "$bin/lockstep-certify" --key "$keydir/c.key" --out "$out/certification.json" -q || status=1
else
    echo "gpu-check: no minisign and no $bin/lockstep-fleet to make a throw-away certifier key; certification skipped"
    status=1
fi

step "bench (matmul, Vulkan and the CPU reference)"
timeout 120 "$bin/lockstep" bench --sizes 256,1024,2048 --repeats 5 --backends vulkan,cpu || status=1

step "exec modes (mlp-train: CPU reference, Vulkan resident and op by op, traced and not; 3 runs each)"
timeout 300 hwtests/exec-modes.sh examples/mlp-train.json "$bin" 3 || status=1

step "examples: trace roots on Vulkan against the CPU reference"
for example in examples/*.json; do
    name=$(basename "$example" .json)
    timeout 60 "$bin/lockstep" exec "$example" --out-dir "$out/$name/vulkan" -q || { status=1; continue; }
    timeout 120 "$bin/lockstep" exec "$example" --out-dir "$out/$name/cpu" --backend cpu -q || { status=1; continue; }
    root_v=$(sed -n 's/.*"root": "\([0-9a-f]*\)".*/\1/p' "$out/$name/vulkan/trace.json")
    root_c=$(sed -n 's/.*"root": "\([0-9a-f]*\)".*/\1/p' "$out/$name/cpu/trace.json")
    same=yes
    for f in "$out/$name/cpu/"*.npy; do
        cmp -s "$f" "$out/$name/vulkan/$(basename "$f")" || same=no
    done
    if [ "$root_v" = "$root_c" ] && [ "$same" = yes ]; then
        echo "$name: MATCH   vulkan $root_v = cpu $root_c, every output bit-identical"
    else
        echo "$name: DIFFER  vulkan $root_v cpu $root_c (outputs identical: $same)"
        status=1
    fi
done

step "done in $(( $(date +%s) - start )) s: $( [ $status = 0 ] && echo 'certified, every example matched' || echo 'SOMETHING FAILED (see above)')"
exit $status
