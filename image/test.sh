#!/usr/bin/env bash
# Boot test of a built image (image/build.sh): boots it in QEMU with OVMF,
# forwards the node's UDP port, waits for lockstepd, reads the node id from
# the console, submits a job with `lockstep submit`, verifies the receipt
# with the stock minisign, checks that the root is read-only and verified,
# then boots a copy whose root partition has one flipped byte and checks
# that it never reaches a serving state.
#
#   IMAGE=path.raw  the image to test (default: the newest in image/out)
#   ACCEL=kvm|tcg   default: kvm when /dev/kvm is usable, else tcg (slow)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
OUT=${OUT:-$here/out}
# On failure the guest's console says why: its last lines go to stderr.
die() {
    echo "image-test: FAIL: $*" >&2
    if [ -n "${console:-}" ] && [ -f "$console" ]; then
        echo "== image-test: last console lines ($console):" >&2
        tail -n 60 "$console" | tr -d '\r' >&2
    fi
    exit 1
}
say() { echo "== image-test: $*" >&2; }

IMAGE=${IMAGE:-$(ls -t "$OUT"/lockstep-*.raw 2>/dev/null | grep -v -- '-nvidia' | head -n 1 || true)}
[ -n "$IMAGE" ] && [ -f "$IMAGE" ] || die "no image: run 'make image' first (or give IMAGE=path.raw)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run 'make image-test' (it installs it)"
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$ovmf_code" ] || die "OVMF missing ($ovmf_code): apt-get install ovmf"
# KVM is used when it is usable, which takes more than a /dev/kvm node:
# nested KVM on some cloud VMs aborts QEMU at start (unsupported MSRs), so
# a five-second probe boot decides.
kvm_usable() {
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || { why="no read/write /dev/kvm"; return 1; }
    local rc
    # An inner shell waits for QEMU, so an abort notice goes nowhere.
    # The probe runs the same firmware the boot will: on some nested hosts
    # KVM starts fine but OVMF's first instructions hit "KVM internal
    # error ... emulation failure", which pauses the guest without ending
    # QEMU, so the exit code alone cannot tell.
    local log
    log=$(mktemp)
    rc=$(bash -c 'timeout 8 qemu-system-x86_64 -machine q35,accel=kvm -cpu host -m 256 \
        -drive if=pflash,format=raw,readonly=on,file='"$ovmf_code"' \
        -display none -serial none -monitor none -nodefaults >/dev/null 2>"'"$log"'"; echo $?' 2>/dev/null)
    if [ "$rc" = 124 ] && ! grep -qi "internal error\|emulation failure" "$log"; then
        rm -f "$log"
        return 0
    fi
    rm -f "$log"
    why="QEMU with KVM fails on this machine (nested virtualisation?)"
    return 1
}
why=""
if [ -z "${ACCEL:-}" ]; then
    if kvm_usable; then ACCEL=kvm; else ACCEL=tcg; say "KVM not usable: $why; software emulation"; fi
fi
if [ "$ACCEL" = kvm ]; then boot_limit=240; cpu=host; else boot_limit=1500; cpu=max; fi
say "image $(basename "$IMAGE"), accelerator $ACCEL (boot limit ${boot_limit}s)"

lockstep=$repo/target/release/lockstep
[ -x "$lockstep" ] || (cd "$repo" && cargo build --release --locked -q -p lockstep-cli)
run=$(mktemp -d "${TMPDIR:-/tmp}/lockstep-image-test.XXXXXX")
qemu_pid=""
cleanup() { if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi; wait 2>/dev/null || true; rm -rf "$run"; }
trap cleanup EXIT

free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# boot DISK CONSOLE PORT: starts QEMU in the background.
boot() {
    cp "$ovmf_vars" "$run/vars-$(basename "$1").fd"
    qemu-system-x86_64 -machine q35,accel="$ACCEL" -cpu "$cpu" -smp 2 -m 2048 \
        -drive if=pflash,format=raw,unit=0,readonly=on,file="$ovmf_code" \
        -drive if=pflash,format=raw,unit=1,file="$run/vars-$(basename "$1").fd" \
        -drive if=virtio,format=raw,file="$1" \
        -netdev user,id=n0,hostfwd=udp:127.0.0.1:"$3"-:4433 -device virtio-net-pci,netdev=n0 \
        -serial file:"$2" -display none -monitor none -no-reboot &
    qemu_pid=$!
}

# wait_for PATTERN CONSOLE SECONDS: 0 when the console shows PATTERN.
wait_for() {
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt "$deadline" ]; do
        grep -aq -- "$1" "$2" 2>/dev/null && return 0
        kill -0 "$qemu_pid" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

stop_vm() { kill "$qemu_pid" 2>/dev/null || true; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=""; }

# 1. The image as built: boots, serves, signs.
disk=$run/disk.raw
cp --sparse=always "$IMAGE" "$disk"
# A flashed disk is bigger than the image: so is this one.
truncate -s +1G "$disk"
# The provisioning input, as a fleet writes it before flashing: a config
# fragment on the ESP. The boot test has no certifier, so it serves
# uncertified (receipts say so); certification is tested in hwtests.
esp_offset=$(sfdisk --json "$disk" 2>/dev/null | python3 -c '
import json, sys
print([p for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p.get("name") == "ESP"][0]["start"] * 512)')
printf '# boot test only: no certifier here\nuncertified = true\n' >"$run/provision.toml"
MTOOLS_SKIP_CHECK=1 mcopy -o -i "$disk@@$esp_offset" "$run/provision.toml" ::/lockstep/provision.toml
port=$(free_udp_port)
console=$run/console.log
start=$SECONDS
boot "$disk" "$console" "$port"
if ! wait_for "lockstepd listening on" "$console" "$boot_limit"; then
    tail -n 40 "$console" >&2
    die "lockstepd did not start within ${boot_limit}s (console above)"
fi
say "lockstepd serving after $((SECONDS - start))s"
key=$(sed -n 's/.*lockstepd listening on [^ ]* as \([A-Za-z0-9+/=]*\).*/\1/p' "$console" | tail -n 1)
[ -n "$key" ] || die "no node id on the console"
say "node id $key"
grep -aq "lockstep-boot: root ro squashfs on /dev/mapper/root verity=yes" "$console" \
    || { grep -a "lockstep-boot" "$console" >&2 || true; die "the root is not a read-only squashfs on dm-verity"; }
say "root is read-only squashfs on dm-verity"
grep -aq "lockstep-state: first boot: creating the state and data partitions" "$console" \
    || say "note: no first-boot state partition message on the console"
mounts=$(grep -a "lockstep-state: key and bundles on" "$console" | tail -n 1 | tr -d '\r')
[ -n "$mounts" ] || die "no state/evidence mount line on the console"
key_fs=$(echo "$mounts" | sed -n 's/.*key and bundles on \([^,]*\), evidence on \(.*\)$/\1/p')
data_fs=$(echo "$mounts" | sed -n 's/.*key and bundles on \([^,]*\), evidence on \(.*\)$/\2/p')
{ [ -n "$key_fs" ] && [ -n "$data_fs" ] && [ "$key_fs" != "$data_fs" ]; } \
    || die "evidence is not on its own file system ($mounts)"
say "evidence on $data_fs, key and bundles on $key_fs"

"$lockstep" random --shape 64,48 --seed 1 --out "$run/a.npy"
"$lockstep" random --shape 48,32 --seed 2 --out "$run/b.npy"
"$lockstep" status --node "127.0.0.1:$port" --node-key "$key" >"$run/status.txt" || die "lockstep status failed"
cat "$run/status.txt" >&2
grep -q "serving uncertified" "$run/status.txt" \
    || die "the provisioning file on the ESP was not applied (lockstepd is not in its uncertified test mode)"
say "the provisioning file on the ESP was applied"
"$lockstep" submit --node "127.0.0.1:$port" --node-key "$key" --receipt "$run/receipt.json" \
    run matmul "$run/a.npy" "$run/b.npy" --out "$run/c.npy" >&2 || die "lockstep submit failed"
minisign -Vm "$run/receipt.json" -P "$key" >&2 || die "minisign rejected the node's receipt"
"$lockstep" run matmul "$run/a.npy" "$run/b.npy" --out "$run/c-local.npy" --backend cpu >/dev/null
cmp -s "$run/c.npy" "$run/c-local.npy" || die "the node's result differs from the local CPU reference"
say "job served, receipt verified by minisign, result equals the CPU reference bit for bit"
stop_vm

# 2. One flipped byte in the root partition: must not serve.
bad=$run/tampered.raw
cp --sparse=always "$IMAGE" "$bad"
read -r root_start root_size < <(sfdisk --json "$bad" 2>/dev/null | python3 -c '
import json, sys
p = [p for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p.get("name") == "lockstep-root"][0]
print(p["start"], p["size"])')
offset=$(( root_start * 512 + root_size * 512 / 2 + 12345 ))
python3 - "$bad" "$offset" <<'EOF'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x01]))
EOF
say "flipped one byte at offset $offset (inside lockstep-root)"
console=$run/console-tampered.log
boot "$bad" "$console" "$(free_udp_port)"
if wait_for "lockstepd listening on" "$console" $((boot_limit / 2)); then
    die "an image with a modified root reached a serving state"
fi
grep -aq "ROOT VERIFICATION FAILED" "$console" \
    || { tail -n 30 "$console" >&2; die "the tampered image did not report a verity failure (console above)"; }
stop_vm
say "tampered root refused: dm-verity verification failed, lockstepd never started"
say "PASS"
