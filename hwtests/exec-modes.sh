#!/usr/bin/env bash
# Side by side, in one run: a program's speed on the CPU reference and on
# the Vulkan device, resident (the default) and op by op, traced and not.
# Runs are interleaved (mode after mode, RUNS rounds), so a machine whose
# load drifts affects every mode alike; prints each mode's median
# "executed in" time, steps/s and the `moved` counters, and the resident
# trace root against the CPU reference's. Figures go in docs/benchmarks.md
# with the machine, date and this command.
#
# Usage: hwtests/exec-modes.sh [PROGRAM.json] [BIN_DIR] [RUNS]
#        (default examples/mlp-train.json target/release 5)
set -euo pipefail
cd "$(dirname "$0")/.."
program="${1:-examples/mlp-train.json}"
bin="${2:-target/release}"
runs="${3:-5}"
[ -x "$bin/lockstep" ] || { echo "exec-modes: $bin/lockstep is missing: cargo build --release --locked -p lockstep-cli"; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
modes=("cpu traced:--backend cpu" "cpu untraced:--backend cpu --no-trace"
       "vulkan resident traced:" "vulkan resident untraced:--no-trace"
       "vulkan per-op traced:--per-op")
for ((r = 0; r < runs; r++)); do
    for i in "${!modes[@]}"; do
        # shellcheck disable=SC2086 # the flags are words
        "$bin/lockstep" exec "$program" --out-dir "$out/$i" ${modes[$i]#*:} > "$out/$i.$r.txt"
    done
done
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
echo "program $program, $runs interleaved runs per mode, $(date -u +%Y-%m-%dT%H:%MZ), $(uname -n)"
printf '%-26s %10s %10s  %s\n' mode "median s" "steps/s" "moved (last run)"
for i in "${!modes[@]}"; do
    t=$(cat "$out/$i".*.txt | sed -n 's/^ops .* executed in \([0-9.]*\) s.*/\1/p' | median)
    steps=$(sed -n 's/^steps *\([0-9]*\) repeat.*/\1/p' "$out/$i.0.txt")
    rate=$(awk -v s="${steps:-0}" -v t="$t" 'BEGIN {if (s > 0 && t > 0) printf "%.1f", s / t; else print "-"}')
    moved=$(sed -n 's/^moved *//p' "$out/$i.$((runs - 1)).txt")
    printf '%-26s %10s %10s  %s\n' "${modes[$i]%%:*}" "$t" "$rate" "$moved"
done
root() { sed -n 's/^trace *root \([0-9a-f]*\).*/\1/p' "$1"; }
echo "trace roots: cpu $(root "$out/0.0.txt"), vulkan resident $(root "$out/2.0.txt"), vulkan per-op $(root "$out/4.0.txt")"
[ "$(root "$out/0.0.txt")" = "$(root "$out/2.0.txt")" ] && [ "$(root "$out/0.0.txt")" = "$(root "$out/4.0.txt")" ] \
    || { echo "exec-modes: TRACE ROOTS DIFFER"; exit 1; }
