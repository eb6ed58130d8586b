#!/usr/bin/env bash
# The Vulkan test suite and one run of each example program (on lavapipe,
# and on SwiftShader in the cross-implementation mode when its ICD is
# present) under Khronos' validation layer, with synchronization validation
# and best practices on. Any message of the layer (an error, a warning, a
# performance note, a synchronization hazard) fails the run.
#
# `make test` runs it; it needs Debian's vulkan-validationlayers (make deps).
# Usage: .ci/validation.sh [SWIFTSHADER_ICD]
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/validation
rm -rf "$out" && mkdir -p "$out"
# Settings: /work/shared/design/platform-facts.md, "Vulkan validation".
# One message is filtered, and only that one: best practices' performance
# note on VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT. A resident run
# records a repeat body once and submits it once per iteration in one batch
# (firmware/vulkan/src/resident.rs), which the spec allows only with that
# flag; the alternatives are recording the body again per iteration or a
# fence wait per iteration, the costs resident execution removes.
cat > "$out/vk_layer_settings.txt" <<SETTINGS
khronos_validation.report_flags = error,warn,perf
khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG
khronos_validation.log_filename = stdout
khronos_validation.enables = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT,VK_VALIDATION_FEATURE_ENABLE_BEST_PRACTICES_EXT
khronos_validation.message_id_filter = UNASSIGNED-BestPractices-vkBeginCommandBuffer-simultaneous-use
SETTINGS
export VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation
export VK_LAYER_SETTINGS_PATH="$PWD/$out"
log="$out/output.log"
icd="${1:-}"
[ -n "$icd" ] && [ -f "$icd" ] && export LOCKSTEP_SWIFTSHADER_ICD="$icd"

cargo build --locked -q -p lockstep-cli
lockstep="${CARGO_TARGET_DIR:-target}/debug/lockstep"
# The loader skips a layer named in VK_INSTANCE_LAYERS that it cannot find,
# so first prove this one is loaded.
VK_LOADER_DEBUG=layer "$lockstep" devices > "$out/loader.log" 2>&1 || true
grep -q 'Insert instance layer "VK_LAYER_KHRONOS_validation"' "$out/loader.log" ||
    { echo "validation: VK_LAYER_KHRONOS_validation is not loaded; install vulkan-validationlayers (make deps)"; exit 1; }
echo "== validation: cargo test -p lockstep-vulkan under VK_LAYER_KHRONOS_validation (sync validation, best practices)"
cargo test --locked -q -p lockstep-vulkan >> "$log" 2>&1 || { cat "$log"; echo "validation: the Vulkan tests failed under the validation layer"; exit 1; }
for example in examples/*.json; do
    name=$(basename "$example" .json)
    echo "== validation: lockstep exec $example (lavapipe)" >> "$log"
    "$lockstep" exec "$example" --out-dir "$out/$name" -q >> "$log" 2>&1
    if [ -n "${LOCKSTEP_SWIFTSHADER_ICD:-}" ]; then
        echo "== validation: lockstep exec $example --cross-implementation-test (SwiftShader)" >> "$log"
        VK_ICD_FILENAMES="$LOCKSTEP_SWIFTSHADER_ICD" "$lockstep" exec "$example" \
            --cross-implementation-test --out-dir "$out/$name-swiftshader" -q >> "$log" 2>&1
        cmp -s "$out/$name/trace.json" "$out/$name-swiftshader/trace.json" && { echo "validation: traces must differ in backend and bundle"; exit 1; }
    fi
done
# Every message of the layer carries "msgNum:".
messages=$(grep -c 'msgNum:' "$log" || true)
tests=$(awk '/^test result:/ {p += $4} END {print p + 0}' "$log")
if [ "$messages" != 0 ]; then
    grep -B1 -A4 'msgNum:' "$log" | head -n 60
    echo "validation: FAILED: $messages message(s) from VK_LAYER_KHRONOS_validation (full log: $log)"
    exit 1
fi
echo "validation: $tests Vulkan tests and $(ls examples/*.json | wc -l) examples under VK_LAYER_KHRONOS_validation with synchronization validation: 0 messages"
