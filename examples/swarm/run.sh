#!/usr/bin/env bash
# A three-node swarm on this machine: each node trains the small MLP on its
# own data shard for 10 steps, node A averages the three weight sets, every
# node continues from the average; ROUNDS rounds. No tensor goes through
# this script: each job names its inputs as references to another node's
# outputs, the submitter's permission says which nodes may fetch them, and
# the nodes fetch them from each other over QUIC. The final receipt's
# lineage covers every step on every node.
#
#   examples/swarm/run.sh OUT_DIR
#
# Environment: LOCKSTEP, LOCKSTEPD (the binaries; default target/release),
# BACKEND (vulkan or cpu; default vulkan), ROUNDS (default 3),
# NODE_C_FLAGS (extra lockstepd flags for node C, e.g. a test build's
# --inject-fault), LINEAGE_FLAGS (extra flags for the final `lockstep
# lineage`, e.g. --reexecute). Writes OUT_DIR/rR/STEP/{R.json,out/,refs/},
# OUT_DIR/nodes/ (state and logs) and OUT_DIR/figures.txt.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: examples/swarm/run.sh OUT_DIR}
LOCKSTEP=${LOCKSTEP:-target/release/lockstep}
LOCKSTEPD=${LOCKSTEPD:-target/release/lockstepd}
BACKEND=${BACKEND:-vulkan}
ROUNDS=${ROUNDS:-3}
NODE_C_FLAGS=${NODE_C_FLAGS:-}
LINEAGE_FLAGS=${LINEAGE_FLAGS:-}
mkdir -p "$out/nodes"
out=$(cd "$out" && pwd)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# start NAME [FLAGS...]: a node on a free loopback port; sets ADDR_NAME, KEY_NAME.
start() {
  local name=$1; shift
  local log="$out/nodes/$name.log"
  "$LOCKSTEPD" --listen 127.0.0.1:0 --backend "$BACKEND" --state "$out/nodes/$name" \
    --file-key --uncertified "$@" >"$log.out" 2>"$log" &
  pids+=($!)
  local line="" tries=0
  until line=$(head -n1 "$log.out" 2>/dev/null) && [ -n "$line" ]; do
    tries=$((tries + 1))
    if [ $tries -gt 600 ]; then echo "node $name did not start; see $log" >&2; exit 1; fi
    sleep 0.1
  done
  local rest=${line#lockstepd listening on }
  printf -v "ADDR_$name" '%s' "${rest%% as *}"
  printf -v "KEY_$name" '%s' "${rest##* as }"
}

start A
start B
# shellcheck disable=SC2086 # NODE_C_FLAGS is a list of flags
start C $NODE_C_FLAGS
nodes=(A B C)
echo "nodes: A $ADDR_A, B $ADDR_B, C $ADDR_C ($BACKEND)"

"$LOCKSTEP" keygen --out "$out/submitter.key" >/dev/null

# submit STEP NODE PROGRAM [--ref NAME=FILE ...]: runs PROGRAM on NODE.
submit() {
  local step=$1 node=$2 program=$3; shift 3
  local addr="ADDR_$node" key="KEY_$node"
  mkdir -p "$out/$step"
  "$LOCKSTEP" submit --node "${!addr}" --node-key "${!key}" --receipt "$out/$step/R.json" \
    --submitter-key "$out/submitter.key" exec "$program" "$@" --out-dir "$out/$step/out" \
    >"$out/$step/submit.log"
}

# permit STEP NODE CONSUMER...: lets the consumers fetch STEP's outputs from NODE.
permit() {
  local step=$1 node=$2; shift 2
  local addr="ADDR_$node" consumers=() c k
  for c in "$@"; do k="KEY_$c"; consumers+=(--consumer "${!k}"); done
  "$LOCKSTEP" permit "$out/$step/R.json" "${consumers[@]}" --submitter-key "$out/submitter.key" \
    --address "${!addr}" --expires-in 3600 --out-dir "$out/$step/refs" >/dev/null
}

# refs PREFIX STEP: --ref flags naming STEP's weights as inputs PREFIX{w1,b1,w2,b2}.
refs() {
  local t
  for t in w1 b1 w2 b2; do printf -- '--ref %s%s=%s ' "$1" "$t" "$out/$2/refs/$t.ref.json"; done
}

now() { date +%s.%N; }
weights_bytes() {
  local t total=0
  for t in w1 b1 w2 b2; do total=$((total + $(stat -c %s "$out/$1/out/$t.npy"))); done
  echo $total
}

t0=$(now)
submit r0/init A "$here/init.json"
permit r0/init A A B C
prev=r0/init
: >"$out/figures.txt"
for r in $(seq 1 "$ROUNDS"); do
  start_s=$(now)
  fetched=0
  jobs=()
  for i in 0 1 2; do
    node=${nodes[$i]}
    # shellcheck disable=SC2046 # refs prints flags
    submit "r$r/train-$i" "$node" "$here/train-$i.json" $(refs "" "$prev") &
    jobs+=($!)
  done
  for j in "${jobs[@]}"; do wait "$j"; done
  for i in 0 1 2; do
    permit "r$r/train-$i" "${nodes[$i]}" A
    fetched=$((fetched + $(weights_bytes "$prev")))
  done
  # shellcheck disable=SC2046
  submit "r$r/average" A "$here/average.json" \
    $(refs a_ "r$r/train-0") $(refs b_ "r$r/train-1") $(refs c_ "r$r/train-2")
  for i in 0 1 2; do fetched=$((fetched + $(weights_bytes "r$r/train-$i"))); done
  permit "r$r/average" A A B C
  prev=r$r/average
  end_s=$(now)
  line=$(printf 'round %d: %.2f s, %d bytes fetched between nodes (12 weight tensors to the trainers, 12 to the averager)' \
    "$r" "$(awk "BEGIN{print $end_s - $start_s}")" "$fetched")
  echo "$line" | tee -a "$out/figures.txt"
done
t1=$(now)
printf 'swarm: %d rounds on 3 nodes in %.2f s\n' "$ROUNDS" "$(awk "BEGIN{print $t1 - $t0}")" | tee -a "$out/figures.txt"
# shellcheck disable=SC2086 # LINEAGE_FLAGS is a list of flags
"$LOCKSTEP" lineage "$out/$prev/R.json" --node "$ADDR_A" --node-key "$KEY_A" $LINEAGE_FLAGS
