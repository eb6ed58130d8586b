#!/usr/bin/env bash
# Boot test of a built image (image/build.sh): boots it in QEMU with OVMF,
# Secure Boot enforced (the image's certificate enrolled in db), and a
# software TPM 2.0 (swtpm, its EK certificate from a local CA),
# forwards the node's UDP port, waits for lockstepd, reads the node id from
# the console, submits a job with `lockstep submit`, verifies the receipt
# with the stock minisign, checks that the root is read-only and verified.
# The device key (docs/identity.md):
#   1. a fresh image makes and seals a key, serves, attests, enrolls;
#   2. a reboot keeps the node id; operators written onto the ESP change
#      nothing; then A/B updates (docs/updates.md) pushed by lockstep-fleet:
#      v2 installs into slot B and serves as the same node, attests with
#      its predicted PCR 11; a downgrade is refused by the node; a broken
#      v3 (lockstepd exits at start) uses up its boot tries and the node
#      returns to v2 on its own, still the same node;
#   3. the same disk with another TPM cannot unseal, does not serve, and
#      says why on the console;
#   4. the same disk with a modified UKI, re-signed for Secure Boot but not
#      with the PCR key, cannot unseal;
#   5. a fresh image on the other TPM serves under a new id, and attestation
#      transcripts with a forged quote, a wrong nonce or the other TPM's
#      quote are refused;
#   6. a copy whose root partition has one flipped byte never serves;
#   7. a UKI not signed for Secure Boot is refused by the firmware;
#   8. the image's kernel under Secure Boot loads a module signed as the
#      NVIDIA variant signs its modules, and refuses other signatures.
#
#   IMAGE=path.raw  the image to test (default: the newest in image/out)
#   ACCEL=kvm|tcg   default: kvm when /dev/kvm is usable, else tcg (slow)
#   SB_KEY, SB_CERT the Secure Boot pair the image was signed with
#                   (default: the development pair in image/out)
#   PCR_KEY         the PCR policy key the image was built with
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
for tool in swtpm swtpm_setup swtpm_localca openssl sbsign unsquashfs mksquashfs veritysetup mdir cpio file; do
    command -v "$tool" >/dev/null || die "$tool missing: run 'make image-test' (it installs what the test needs)"
done
[ "$(id -u)" = 0 ] || die "the update scenarios re-squash the root as releases are built: run as root"
virt_fw_vars=${VIRT_FW_VARS:-$repo/target/image-venv/bin/virt-fw-vars}
[ -x "$virt_fw_vars" ] || die "no virt-fw-vars at $virt_fw_vars: run 'make image-test' (it installs virt-firmware in target/image-venv)"
MANIFEST=${MANIFEST:-${IMAGE%.raw}.manifest.json}
[ -f "$MANIFEST" ] || die "no manifest beside the image ($MANIFEST)"
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$ovmf_code" ] || die "OVMF missing ($ovmf_code): apt-get install ovmf"
sb_key=${SB_KEY:-$OUT/dev-sb.key}
sb_cert=${SB_CERT:-$OUT/dev-sb.crt}
[ -f "$sb_key" ] && [ -f "$sb_cert" ] || die "no Secure Boot pair ($sb_key, $sb_cert): give SB_KEY= and SB_CERT=, the pair the image was signed with"
# KVM is used when it is usable, which takes more than a /dev/kvm node:
# nested KVM on some cloud VMs aborts QEMU at start (unsupported MSRs), so
# a fifteen-second probe boot decides (a loaded host can take longer than
# five seconds to reach the firmware instruction that fails).
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
    rc=$(bash -c 'timeout 15 qemu-system-x86_64 -machine q35,accel=kvm -cpu host -m 256 \
        -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
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

# The host's tools only drive the test (submit, push, verify): the dev
# build `make test` leaves (or `make image-test` makes) serves, and saves
# CI a release build of the client and fleet. HOST_BIN picks others.
host_bin=${HOST_BIN:-$repo/target/debug}
lockstep=$host_bin/lockstep
fleet_bin=$host_bin/lockstep-fleet
[ -x "$lockstep" ] && [ -x "$fleet_bin" ] || (cd "$repo" && cargo build --locked -q -p lockstep-cli -p lockstep-fleet)
run=$(mktemp -d "${TMPDIR:-/tmp}/lockstep-image-test.XXXXXX")
qemu_pid=""
cleanup() {
    touch "$run/vm.stop" 2>/dev/null || true
    pkill -f -- "$run/vars-" 2>/dev/null || true
    pkill -f -- "$run/tpm-" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT

# Software TPMs, "manufactured" as a vendor would: swtpm_setup writes an
# EK certificate signed by a local CA (root and intermediate made here),
# which is the manufacturer root the fleet is told to trust.
cat >"$run/localca.conf" <<EOF
statedir = $run/ca
signingkey = $run/ca/signkey.pem
issuercert = $run/ca/issuercert.pem
certserial = $run/ca/certserial
EOF
cat >"$run/swtpm_setup.conf" <<EOF
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $run/localca.conf
create_certs_tool_options = /etc/swtpm-localca.options
active_pcr_banks = sha256
EOF
mkdir -p "$run/ca"
make_tpm() { # NAME
    mkdir -p "$run/tpm-$1"
    swtpm_setup --tpm2 --tpmstate "$run/tpm-$1" --create-ek-cert --create-platform-cert --lock-nvram \
        --config "$run/swtpm_setup.conf" --overwrite >"$run/tpm-$1.setup.log" 2>&1 \
        || { cat "$run/tpm-$1.setup.log" >&2; die "swtpm_setup failed for TPM $1"; }
}
make_tpm A
make_tpm B
cat "$run/ca/swtpm-localca-rootca-cert.pem" "$run/ca/issuercert.pem" >"$run/ek-roots.pem"
say "two software TPMs (A, B) with EK certificates from a local CA"

# The firmware's Secure Boot keys, as a data centre enrols its own: the
# image's certificate as PK, KEK and db, Secure Boot on. Every boot starts
# from a copy of these variables, so PCR 7 (the Secure Boot state, which
# the key is sealed to) is the same on every boot.
owner=6c6f636b-7374-6570-8000-000000000001
"$virt_fw_vars" -i "$ovmf_vars" -o "$run/sb-vars.fd" --set-pk "$owner" "$sb_cert" \
    --add-kek "$owner" "$sb_cert" --add-db "$owner" "$sb_cert" --sb >"$run/vars.log" 2>&1 \
    || { cat "$run/vars.log" >&2; die "virt-fw-vars could not enrol the Secure Boot keys"; }
say "Secure Boot keys enrolled in the firmware variables (db: $(openssl x509 -in "$sb_cert" -noout -subject | sed 's/^subject=//'))"

free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# boot DISK CONSOLE PORT TPM: starts swtpm (TPM A or B: its state persists
# across boots, as a machine's TPM does) and QEMU in the background, with
# Secure Boot enforced. A guest reboot ends QEMU, unless REBOOTS=yes (the
# update scenarios, where the node reboots into its new slot): then the
# machine is powered on again, TPM included, with the same disk and
# firmware variables, and the console log goes on. A power cycle rather
# than QEMU's in-place reset: under TCG with SMM and two vCPUs, OVMF hung
# on one warm reset in three during the rollback scenario.
power_on() { # DISK CONSOLE PORT TPM
    local sock=$run/tpm-$4.sock
    rm -f "$sock"
    swtpm socket --tpm2 --tpmstate dir="$run/tpm-$4" --ctrl type=unixio,path="$sock" --terminate \
        --log file="$run/tpm-$4.log" &
    local tpm=$!
    for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.1; done
    [ -S "$sock" ] || {
        echo "image-test: swtpm for TPM $4 did not start: $(tail -n 3 "$run/tpm-$4.log" 2>/dev/null)" >&2
        kill "$tpm" 2>/dev/null; return 1; }
    qemu-system-x86_64 -machine q35,smm=on,accel="$ACCEL" -cpu "$cpu" -smp 2 -m 2048 \
        -global driver=cfi.pflash01,property=secure,value=on \
        -drive if=pflash,format=raw,unit=0,readonly=on,file="$ovmf_code" \
        -drive if=pflash,format=raw,unit=1,file="$run/vars-$(basename "$1").fd" \
        -drive if=virtio,format=raw,file="$1" \
        -chardev socket,id=chrtpm,path="$sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
        -device tpm-tis,tpmdev=tpm0 \
        -netdev user,id=n0,hostfwd=udp:127.0.0.1:"$3"-:4433 -device virtio-net-pci,netdev=n0 \
        -chardev file,id=ser0,path="$2",append=on -serial chardev:ser0 \
        -display none -monitor none -no-reboot
    kill "$tpm" 2>/dev/null; wait "$tpm" 2>/dev/null
    return 0
}
boot() {
    cp "$run/sb-vars.fd" "$run/vars-$(basename "$1").fd"
    : >"$2"
    rm -f "$run/vm.stop"
    if [ "${REBOOTS:-no}" = yes ]; then
        ( while [ ! -e "$run/vm.stop" ]; do power_on "$@" || exit 1; done ) &
    else
        power_on "$@" &
    fi
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

stop_vm() {
    # The flag ends a REBOOTS=yes loop; QEMU is the one process whose
    # command line names this run's firmware variables; swtpm ends with it.
    touch "$run/vm.stop"
    pkill -f -- "$run/vars-" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true; qemu_pid=""
    rm -f "$run/vm.stop"
}

# serve DISK CONSOLE PORT TPM: boots, waits until lockstepd serves, and
# sets $node to the node id from the console.
serve() {
    local start=$SECONDS
    console=$2
    boot "$@"
    wait_for "lockstepd listening on" "$2" "$boot_limit" \
        || die "lockstepd did not start within ${boot_limit}s"
    say "lockstepd serving after $((SECONDS - start))s (TPM $4)"
    node=$(sed -n 's/.*lockstepd listening on [^ ]* as \([A-Za-z0-9+/=]*\).*/\1/p' "$2" | tail -n 1)
    [ -n "$node" ] || die "no node id on the console"
}

# refuses DISK CONSOLE TPM WHAT: boots and expects the identity service to
# refuse to unseal, and lockstepd never to listen.
refuses() {
    console=$2
    boot "$1" "$2" "$(free_udp_port)" "$3"
    wait_for "lockstep-identity: NOT SERVING" "$2" "$boot_limit" \
        || die "$4: the node did not report that it cannot unseal its key"
    grep -aq "CANNOT UNSEAL the device key" "$2" || die "$4: no unseal failure on the console"
    # lockstepd requires the identity service: give systemd a moment to
    # (not) start it, then check that it never listened.
    sleep 10
    if grep -aq "lockstepd listening on" "$2"; then die "$4: lockstepd served anyway"; fi
    stop_vm
    say "$4: cannot unseal, not serving; the console says: $(grep -a 'CANNOT UNSEAL' "$2" | tail -n 1 | tr -d '\r' | cut -c1-150)..."
}

manifest_field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$MANIFEST" "$1"; }

esp_offset() { # DISK
    sfdisk --json "$1" 2>/dev/null | python3 -c '
import json, sys
print([p for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p.get("name") == "ESP"][0]["start"] * 512)'
}
# esp_put DISK FILE PATH / esp_get DISK PATH FILE: copy to / from the ESP.
esp_put() { MTOOLS_SKIP_CHECK=1 mcopy -o -i "$1@@$(esp_offset "$1")" "$2" "::/$3"; }
esp_get() { MTOOLS_SKIP_CHECK=1 mcopy -o -i "$1@@$(esp_offset "$1")" "::/$2" "$3"; }

# Two fleets: ours, whose operator the node is provisioned with, and an
# intruder's, whose key someone later writes onto the node's ESP.
for f in fleet intruder; do
    "$fleet_bin" --dir "$run/$f" init --unencrypted >/dev/null || die "lockstep-fleet init failed"
done
operator=$(tail -n 1 "$run/fleet/operator.pub")
intruder=$(tail -n 1 "$run/intruder/operator.pub")
for f in fleet intruder; do
    "$fleet_bin" --dir "$run/$f" trust-ek-roots "$run/ek-roots.pem" >&2 || die "lockstep-fleet trust-ek-roots failed"
    "$fleet_bin" --dir "$run/$f" accept-image "$MANIFEST" >&2 || die "lockstep-fleet accept-image failed"
done

# 1. The image as built, on TPM A: seals a new key, serves, signs, attests.
disk=$run/disk.raw
cp --sparse=always "$IMAGE" "$disk"
# A flashed disk is bigger than the image: so is this one.
truncate -s +1G "$disk"
# The provisioning input, as a fleet writes it before flashing: a config
# fragment on the ESP. The boot test has no certifier, so it serves
# uncertified (receipts say so); certification is tested in hwtests.
printf '# boot test only: no certifier here\nuncertified = true\ntrusted_operators = ["%s"]\n' "$operator" >"$run/provision.toml"
esp_put "$disk" "$run/provision.toml" lockstep/provision.toml
port=$(free_udp_port)
serve "$disk" "$run/console.log" "$port" A
key=$node
say "node id $key"
grep -aq "lockstep-identity: sealed a new device key" "$console" || die "first boot did not seal a new device key"
say "$(grep -a "lockstep-identity: sealed a new device key" "$console" | tail -n 1 | tr -d '\r')"
say "$(grep -a "lockstep-identity: device key unsealed" "$console" | tail -n 1 | tr -d '\r')"
grep -aq "lockstep-boot: root ro squashfs on /dev/mapper/root verity=yes secure-boot=on" "$console" \
    || { grep -a "lockstep-boot" "$console" >&2 || true; die "the root is not a read-only squashfs on dm-verity, or Secure Boot is off"; }
say "Secure Boot on (the firmware checked systemd-boot and the UKI); root is read-only squashfs on dm-verity"
grep -aq "lockstep-boot: slot a, version $(manifest_field version) " "$console" \
    || { grep -a "lockstep-boot" "$console" >&2 || true; die "the console does not say the node runs slot a, version $(manifest_field version)"; }
say "$(grep -a "lockstep-boot: slot" "$console" | tail -n 1 | tr -d '\r')"
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
grep -Eq "^key +tpm-sealed" "$run/status.txt" || die "lockstep status does not say the key is tpm-sealed"
"$lockstep" submit --node "127.0.0.1:$port" --node-key "$key" --receipt "$run/receipt.json" \
    run matmul "$run/a.npy" "$run/b.npy" --out "$run/c.npy" >&2 || die "lockstep submit failed"
minisign -Vm "$run/receipt.json" -P "$key" >&2 || die "minisign rejected the node's receipt"
"$lockstep" run matmul "$run/a.npy" "$run/b.npy" --out "$run/c-local.npy" --backend cpu >/dev/null
cmp -s "$run/c.npy" "$run/c-local.npy" || die "the node's result differs from the local CPU reference"
say "job served, receipt verified by minisign, result equals the CPU reference bit for bit"
grep -q '"key_protection":"tpm-sealed"' "$run/receipt.json" || die "the receipt does not say the key is tpm-sealed"
t0=$(date +%s%N)
"$lockstep" attest --node "127.0.0.1:$port" --node-key "$key" --ek-roots "$run/ek-roots.pem" \
    --accept-manifest "$MANIFEST" --save-transcript "$run/attest-a.json" >"$run/attest-a.txt" \
    || { cat "$run/attest-a.txt" >&2; die "lockstep attest refused the node"; }
cat "$run/attest-a.txt" >&2
say "attestation verified in $(( ($(date +%s%N) - t0) / 1000000 )) ms: a TPM quote over the boot PCRs, the EK chain to the local CA, PCR 11 of this image"
"$fleet_bin" --dir "$run/fleet" enroll "127.0.0.1:$port" --node-key "$key" >&2 || die "attested enrolment failed"
"$fleet_bin" --dir "$run/fleet" show "$key" >"$run/inventory.json" || die "lockstep-fleet show failed"
grep -q '"attestation_sha256": *"[0-9a-f]\{64\}"' "$run/inventory.json" \
    || { cat "$run/inventory.json" >&2; die "the inventory has no attestation digest"; }
say "enrolled with attestation; the inventory records its digest"
stop_vm

# 2. Reboot on TPM A with another operator set written onto the ESP: the
# same node id, and the sealed operators still rule. This boot runs on
# with reboots allowed: the updates below reboot the node into its new
# slot, and lockstep-fleet waits for it.
printf 'uncertified = true\ntrusted_operators = ["%s"]\n' "$intruder" >"$run/provision-intruder.toml"
esp_put "$disk" "$run/provision-intruder.toml" lockstep/provision.toml
port=$(free_udp_port)
REBOOTS=yes serve "$disk" "$run/console-reboot.log" "$port" A
[ "$node" = "$key" ] || die "the node id changed across a reboot ($key -> $node)"
if grep -aq "lockstep-identity: sealed a new device key" "$console"; then die "the reboot made a new key"; fi
say "reboot: same node id, the sealed key unsealed, not re-made"
say "$(grep -a "lockstep-identity: device key unsealed" "$console" | tail -n 1 | tr -d '\r')"
if "$fleet_bin" --dir "$run/intruder" enroll "127.0.0.1:$port" --node-key "$key" >"$run/intruder.txt" 2>&1; then
    cat "$run/intruder.txt" >&2; die "the operator written onto the ESP was trusted"
fi
grep -q "not trusted" "$run/intruder.txt" || { cat "$run/intruder.txt" >&2; die "the intruder was refused, but not for its operator key"; }
say "operator written onto the ESP refused: $(tail -n 1 "$run/intruder.txt" | cut -c1-150)"
"$fleet_bin" --dir "$run/fleet" enroll "127.0.0.1:$port" --node-key "$key" >&2 \
    || die "the provisioned (sealed) operator is no longer trusted"
say "the sealed operator set is unchanged"

# The next releases, built as a release pipeline would from this image's
# parts: a new IMAGE_VERSION in the root and the UKI, the root squashed
# again (new root hash, new command line), the UKI made by uki.sh with the
# same PCR key (PCRs 11+12 signed: the node's key unseals) and signed with
# the same Secure Boot key, laid out by assemble.sh. v3 is deliberately
# broken: its lockstepd exits at start.
v1=$(manifest_field version)
variant=$(manifest_field variant)
epoch=$(manifest_field source_date_epoch)
parts=$OUT/work-$variant
pcr_key=${PCR_KEY:-$OUT/dev-pcr.key}
for f in linuxx64.efi.stub vmlinuz os-release cmdline initrd root.squashfs parts/BOOTX64.EFI; do
    [ -f "$parts/$f" ] || die "$parts/$f missing: the releases are derived from 'make image' (run it again)"
done
[ -f "$pcr_key" ] || die "no PCR key at $pcr_key (give PCR_KEY=, the key the image was built with)"
t0=$SECONDS
unsquashfs -no-progress -quiet -d "$run/tree" "$parts/root.squashfs" >/dev/null || die "unsquashfs failed"
release() { # VERSION: $run/rel/lockstep-VERSION.{raw,efi,manifest.json} from $run/tree
    local v=$1 d=$run/rel-$1
    mkdir -p "$d/parts" "$run/rel"
    sed -i --follow-symlinks "s/^IMAGE_VERSION=.*/IMAGE_VERSION=$v/" "$run/tree/etc/os-release"
    sed "s/^IMAGE_VERSION=.*/IMAGE_VERSION=$v/" "$parts/os-release" >"$d/os-release"
    mksquashfs "$run/tree" "$d/parts/root.squashfs" -comp zstd -Xcompression-level 3 -noappend -no-progress -quiet -processors 2 >/dev/null
    local rh
    rh=$(veritysetup format "$d/parts/root.squashfs" "$d/parts/root.verity" | sed -n 's/^Root hash:[[:space:]]*//p')
    [ ${#rh} = 64 ] || die "veritysetup gave no root hash for $v"
    printf '%s' "$rh" >"$d/parts/roothash"
    sed "s/lockstep\.roothash=[0-9a-f]*/lockstep.roothash=$rh/" "$parts/cmdline" >"$d/cmdline"
    local pcr11
    pcr11=$(SOURCE_DATE_EPOCH=$epoch SB_KEY=$sb_key SB_CERT=$sb_cert "$here/uki.sh" "$parts/linuxx64.efi.stub" \
        "$parts/vmlinuz" "$d/os-release" "$d/cmdline" "$parts/initrd" "$pcr_key" "$d/parts/lockstep.efi") \
        || die "uki.sh failed for $v"
    cp "$parts/parts/BOOTX64.EFI" "$d/parts/BOOTX64.EFI"
    NAME=lockstep-$v VERSION=$v VARIANT=$variant "$here/assemble.sh" "$d/parts" "$run/rel/lockstep-$v.raw" >"$d/slot.json" \
        || die "assemble.sh failed for $v"
    cp "$d/parts/lockstep.efi" "$run/rel/lockstep-$v.efi"
    python3 - "$MANIFEST" "$run/rel/lockstep-$v.manifest.json" "$v" "$rh" "$pcr11" "$d/slot.json" "$d/cmdline" "$run/rel/lockstep-$v.raw" <<'PY'
import hashlib, json, os, sys
src, dst, v, rh, pcr11, slot, cmdline, raw = sys.argv[1:9]
m = json.load(open(src))
h = hashlib.sha256()
with open(raw, "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
m.update(name=f"lockstep-{v}", version=v, root_hash=rh, tpm_pcr11_sha256=pcr11, slot=json.load(open(slot)),
         kernel_cmdline=open(cmdline).read(), image=os.path.basename(raw), image_sha256=h.hexdigest(),
         image_bytes=os.path.getsize(raw))
json.dump(m, open(dst, "w"), indent=2, sort_keys=True)
PY
    rm -rf "$d"
}
v2=$v1.2
v3=$v1.3
release "$v2"
printf '#!/bin/sh\necho "lockstepd: this test release is broken on purpose" >&2\nexit 1\n' >"$run/tree/usr/bin/lockstepd"
release "$v3"
rm -rf "$run/tree"
say "releases $v2 and $v3 (broken) derived from this image in $((SECONDS - t0)) s"

# A copy of the fleet as it is now, before any update: it will replay an
# older release under an update version the node has already installed
# (a second operator workstation, or an attacker with an old signed
# update), which only the node can refuse.
cp -a "$run/fleet" "$run/fleet-before"
# v2, pushed by the fleet: written into slot B, installed, booted; the node
# comes back as the same node, its boot counted and then blessed.
"$fleet_bin" --dir "$run/fleet" accept-image "$run/rel/lockstep-$v2.manifest.json" >&2 || die "accept-image $v2 failed"
t0=$SECONDS
"$fleet_bin" --dir "$run/fleet" image push "$run/rel/lockstep-$v2.raw" "$key" >"$run/push-v2.txt" 2>&1 \
    || { cat "$run/push-v2.txt" >&2; die "lockstep-fleet image push $v2 failed"; }
update_s=$((SECONDS - t0))
grep -a "healthy\|node" "$run/push-v2.txt" | tail -n 4 >&2
this_boot() { awk '/lockstep-boot: root/ {b = ""} {b = b $0 "\n"} END {printf "%s", b}' "$console"; }
for _ in $(seq 300); do this_boot | grep -aq "lockstep-health: healthy" && break; sleep 1; done
this_boot | grep -aq "lockstep-health: healthy" || die "v2 did not report a healthy boot (self-test passed, serving)"
this_boot | grep -aq "lockstep-boot: slot b, version $v2 " || die "the node does not run $v2 from slot b"
say "$(this_boot | grep -a "lockstep-health: healthy" | tail -n 1 | tr -d '\r')"
node=$(sed -n 's/.*lockstepd listening on [^ ]* as \([A-Za-z0-9+/=]*\).*/\1/p' "$console" | tail -n 1)
[ "$node" = "$key" ] || die "after the update the node id is $node, not $key"
"$lockstep" attest --node "127.0.0.1:$port" --node-key "$key" --ek-roots "$run/ek-roots.pem" \
    --accept-manifest "$run/rel/lockstep-$v2.manifest.json" >/dev/null \
    || die "v2's quote does not show the PCR 11 its manifest predicts"
"$fleet_bin" --dir "$run/fleet" list >"$run/list-v2.txt" || die "lockstep-fleet list failed"
grep -q -- "$v2" "$run/list-v2.txt" || { cat "$run/list-v2.txt" >&2; die "lockstep-fleet list does not show $v2"; }
cat "$run/list-v2.txt" >&2
say "update to $v2 pushed and healthy in ${update_s} s: slot b, same node id, same enrolment, the quote shows $v2's PCR 11"

# Refused by the node: the older release v1, signed by a trusted operator
# as update version 1, which the node has installed already (its floor).
# This fleet refuses to sign a version twice itself; the copy from before
# v2 does not know, so the refusal comes from the node.
if "$fleet_bin" --dir "$run/fleet-before" image push "$IMAGE" "$key" --version 1 >"$run/push-old.txt" 2>&1; then
    cat "$run/push-old.txt" >&2; die "the node installed an older update"
fi
grep -q "refused the update: .*not newer than 1" "$run/push-old.txt" \
    || { cat "$run/push-old.txt" >&2; die "the downgrade was not refused by the node for its version"; }
say "downgrade refused by the node: $(grep "refused the update" "$run/push-old.txt" | tail -n 1 | cut -c1-220)"

# v3 is broken: it uses up its boot tries, and systemd-boot returns to v2.
t0=$SECONDS
if "$fleet_bin" --dir "$run/fleet" image push "$run/rel/lockstep-$v3.raw" "$key" >"$run/push-v3.txt" 2>&1; then
    cat "$run/push-v3.txt" >&2; die "the push of the broken $v3 reported success"
fi
rollback_s=$((SECONDS - t0))
grep -q "ROLLED BACK" "$run/push-v3.txt" || { cat "$run/push-v3.txt" >&2; die "the push of $v3 failed, but not with a rollback"; }
say "$(grep "ROLLED BACK" "$run/push-v3.txt" | tail -n 1 | cut -c1-200)"
grep -aq "lockstep-health: BOOT UNHEALTHY" "$console" || die "no unhealthy boot on the console"
this_boot | grep -aq "lockstep-boot: slot b, version $v2 .*ROLLED BACK from $v3" \
    || die "the node does not report running $v2 in slot b after a rollback from $v3"
node=$(sed -n 's/.*lockstepd listening on [^ ]* as \([A-Za-z0-9+/=]*\).*/\1/p' "$console" | tail -n 1)
[ "$node" = "$key" ] || die "after the rollback the node id is $node, not $key"
"$lockstep" status --node "127.0.0.1:$port" --node-key "$key" >/dev/null || die "the node does not serve after the rollback"
say "broken $v3 rolled back to $v2 in ${rollback_s} s ($(grep -ac "lockstep-health: BOOT UNHEALTHY" "$console") unhealthy boots), same node id, serving"
stop_vm
MTOOLS_SKIP_CHECK=1 mdir -b -i "$disk@@$(esp_offset "$disk")" ::/EFI/Linux >"$run/esp-linux.txt"
grep -q "lockstep-$v2.efi" "$run/esp-linux.txt" || { cat "$run/esp-linux.txt" >&2; die "v2's UKI was not blessed (renamed without its boot counter)"; }
grep -q "lockstep-$v3+0-" "$run/esp-linux.txt" || { cat "$run/esp-linux.txt" >&2; die "v3's UKI does not show its tries used up"; }
say "ESP: $(tr '\n' ' ' <"$run/esp-linux.txt" | sed 's|::/EFI/Linux/||g')"

# 3. The same disk in another machine: TPM B cannot unseal.
refuses "$disk" "$run/console-other-tpm.log" B "same disk, other TPM"

# 4. A modified UKI on TPM A: one changed byte in its command line, signed
# again for Secure Boot (whoever holds the Secure Boot key but not the PCR
# key): it boots, and cannot unseal.
uki=EFI/Linux/lockstep-$v2.efi
esp_get "$disk" "$uki" "$run/uki-orig.efi" || die "no UKI at $uki on the ESP"
python3 - "$run/uki-orig.efi" "$run/uki-unsigned.efi" <<'PY'
import sys
d = open(sys.argv[1], "rb").read()
assert d.count(b"loglevel=4") == 1, "no unique loglevel=4 in the UKI's command line"
open(sys.argv[2], "wb").write(d.replace(b"loglevel=4", b"loglevel=5"))
PY
sbsign --key "$sb_key" --cert "$sb_cert" --output "$run/uki.efi" "$run/uki-unsigned.efi" 2>/dev/null \
    || die "sbsign could not re-sign the modified UKI"
moddisk=$run/modified-uki.raw
cp --sparse=always "$disk" "$moddisk"
esp_put "$moddisk" "$run/uki.efi" "$uki"
refuses "$moddisk" "$run/console-modified-uki.log" A "modified UKI (its command line), re-signed for Secure Boot"
rm -f "$moddisk"

# 5. A fresh image on TPM B: another machine, another identity.
diskb=$run/disk-b.raw
cp --sparse=always "$IMAGE" "$diskb"
truncate -s +1G "$diskb"
esp_put "$diskb" "$run/provision.toml" lockstep/provision.toml
port=$(free_udp_port)
serve "$diskb" "$run/console-b.log" "$port" B
[ "$node" != "$key" ] || die "the node on TPM B has the same id as on TPM A"
"$lockstep" attest --node "127.0.0.1:$port" --node-key "$node" --ek-roots "$run/ek-roots.pem" \
    --accept-manifest "$MANIFEST" --save-transcript "$run/attest-b.json" >/dev/null \
    || die "lockstep attest refused the node on TPM B"
stop_vm
rm -f "$diskb"
say "TPM B: a fresh image serves as $node and attests"

# Recorded exchanges, edited: each must be refused, naming what failed.
python3 - "$run" <<'PY'
import copy, json, sys
run = sys.argv[1]
a = json.load(open(f"{run}/attest-a.json"))
b = json.load(open(f"{run}/attest-b.json"))
def flip(h, i):
    d = bytearray(bytes.fromhex(h)); d[i] ^= 1; return d.hex()
forged = copy.deepcopy(a)
forged["evidence"]["quote"] = flip(a["evidence"]["quote"], len(a["evidence"]["quote"]) // 2 - 5)
json.dump(forged, open(f"{run}/t-forged.json", "w"))
nonce = copy.deepcopy(a)
nonce["nonce"] = flip(a["nonce"], 0)
json.dump(nonce, open(f"{run}/t-wrong-nonce.json", "w"))
other = copy.deepcopy(a)
other["evidence"] = b["evidence"]
json.dump(other, open(f"{run}/t-other-tpm.json", "w"))
PY
"$lockstep" attest --check-transcript "$run/attest-a.json" --ek-roots "$run/ek-roots.pem" \
    --accept-manifest "$MANIFEST" >/dev/null || die "the unedited transcript does not verify offline"
for t in forged wrong-nonce other-tpm; do
    if "$lockstep" attest --check-transcript "$run/t-$t.json" --ek-roots "$run/ek-roots.pem" \
        --accept-manifest "$MANIFEST" >"$run/t-$t.txt" 2>&1; then
        die "the transcript with a $t quote was accepted"
    fi
    say "$t quote refused: $(tail -n 1 "$run/t-$t.txt" | cut -c1-150)"
done
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$run/other-ca.key" -out "$run/other-ca.pem" \
    -subj "/CN=not the manufacturer" -days 2 2>/dev/null
if "$lockstep" attest --check-transcript "$run/attest-a.json" --ek-roots "$run/other-ca.pem" \
    --accept-manifest "$MANIFEST" >"$run/t-ca.txt" 2>&1; then
    die "an EK certificate from an untrusted CA was accepted"
fi
say "EK chain to an untrusted CA refused: $(tail -n 1 "$run/t-ca.txt" | cut -c1-150)"

# 6. One flipped byte in the root partition: must not serve.
bad=$run/tampered.raw
cp --sparse=always "$IMAGE" "$bad"
read -r root_start root_size < <(sfdisk --json "$bad" 2>/dev/null | python3 -c '
import json, sys
p = [p for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p.get("name") == "lockstep-root-a"][0]
print(p["start"], p["size"])')
offset=$(( root_start * 512 + root_size * 512 / 2 + 12345 ))
python3 - "$bad" "$offset" <<'EOF'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x01]))
EOF
say "flipped one byte at offset $offset (inside lockstep-root-a)"
console=$run/console-tampered.log
boot "$bad" "$console" "$(free_udp_port)" B
if wait_for "lockstepd listening on" "$console" $((boot_limit / 2)); then
    die "an image with a modified root reached a serving state"
fi
grep -aq "ROOT VERIFICATION FAILED" "$console" \
    || { tail -n 30 "$console" >&2; die "the tampered image did not report a verity failure (console above)"; }
stop_vm
say "tampered root refused: dm-verity verification failed, lockstepd never started"
# 7. Secure Boot: the same UKI, not signed, is refused by the firmware:
# nothing of it runs (no initramfs line ever reaches the console).
sbdisk=$run/unsigned.raw
cp --sparse=always "$IMAGE" "$sbdisk"
esp_get "$sbdisk" "EFI/Linux/lockstep-$v1.efi" "$run/uki-v1.efi" || die "no UKI on the fresh image's ESP"
sbattach --remove "$run/uki-v1.efi" >/dev/null 2>&1 || die "the image's UKI has no Secure Boot signature to remove"
esp_put "$sbdisk" "$run/uki-v1.efi" "EFI/Linux/lockstep-$v1.efi"
console=$run/console-unsigned.log
boot "$sbdisk" "$console" "$(free_udp_port)" B
sb_wait=$((boot_limit / 5))
wait_for "Error loading .*lockstep-.*: \(Access Denied\|Security Violation\)" "$console" "$sb_wait" || true
grep -aq "Error loading .*lockstep-.*: \(Access Denied\|Security Violation\)" "$console" \
    || { tail -n 20 "$console" | tr -d '\r' >&2; die "the firmware did not refuse the UKI without a Secure Boot signature"; }
if grep -aq "lockstep: \|lockstep-boot\|lockstepd listening" "$console"; then
    die "a UKI without a Secure Boot signature ran"
fi
stop_vm
say "UKI without a Secure Boot signature refused by the firmware: $(grep -ao "Error loading .*lockstep-.*: \(Access Denied\|Security Violation\)" "$console" | head -n 1 | tr -d '\r')"
rm -f "$sbdisk"
# 8. Kernel modules under Secure Boot (docs/updates.md, "NVIDIA modules"):
# the image's own kernel, in a UKI signed with the Secure Boot key, booted
# with Secure Boot enforced, loads a module signed as the NVIDIA variant's
# build signs its modules (module-sig.sh: a module key certified by the
# Secure Boot key, its certificate in the signature), and refuses the same
# module unsigned or signed by a key the firmware's db does not vouch for.
# The probe is an initramfs of busybox, the modules and a script; the
# module is the image's own dummy.ko (no NVIDIA module builds here).
probe=$run/modsig
mkdir -p "$probe"
# Only the one module leaves the root (the derived releases' tree is gone).
unsquashfs -no-progress -quiet -d "$probe/tree" "$parts/root.squashfs" \
    'usr/lib/modules/*/kernel/drivers/net/dummy.ko' >/dev/null || die "unsquashfs failed"
dummy=$(ls "$probe"/tree/usr/lib/modules/*/kernel/drivers/net/dummy.ko 2>/dev/null | head -n 1)
[ -n "$dummy" ] || die "the image's kernel has no dummy.ko to probe module signatures with"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" | grep -q "statically linked" \
    || die "a static busybox is missing: run 'make image-test' (it installs busybox-static)"
mkdir -p "$probe/initrd/bin" "$probe/initrd/m" "$probe/initrd/proc" "$probe/initrd/sys" "$probe/initrd/tmp"
cp "$busybox" "$probe/initrd/bin/busybox"
for a in sh mount insmod rmmod cat tr poweroff sleep; do ln -s busybox "$probe/initrd/bin/$a"; done
cp "$dummy" "$probe/initrd/m/debian.ko"
cp "$dummy" "$probe/initrd/m/unsigned.ko"
"$here/module-sig.sh" strip "$probe/initrd/m/unsigned.ko"
"$here/module-sig.sh" key "$sb_key" "$sb_cert" "Lockstep modules (boot test)" "$probe/module.key" "$probe/module.crt"
cp "$dummy" "$probe/initrd/m/certified.ko"
"$here/module-sig.sh" sign "$probe/module.key" "$probe/module.crt" "$probe/initrd/m/certified.ko"
"$here/module-sig.sh" verify "$sb_cert" "$probe/initrd/m/certified.ko"
openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days 1 -subj "/CN=Lockstep modules (not in db)/" \
    -keyout "$probe/other.key" -out "$probe/other.crt" 2>/dev/null || die "openssl could not make a key"
cp "$dummy" "$probe/initrd/m/self-signed.ko"
"$here/module-sig.sh" sign "$probe/other.key" "$probe/other.crt" "$probe/initrd/m/self-signed.ko"
cat >"$probe/initrd/init" <<'PROBE'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t securityfs securityfs /sys/kernel/security
echo "modsig-probe: lockdown: $(cat /sys/kernel/security/lockdown)"
for m in unsigned self-signed certified debian; do
    if insmod "/m/$m.ko" 2>/tmp/err; then
        echo "modsig-probe: $m: loaded"
        rmmod dummy
    else
        echo "modsig-probe: $m: refused ($(tr '\n' ' ' </tmp/err))"
    fi
    sleep 1
done
echo "modsig-probe: done"
poweroff -f
PROBE
chmod 0755 "$probe/initrd/init"
(cd "$probe/initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$probe/initrd.cpio"
echo "console=ttyS0,115200 panic=10" >"$probe/cmdline"
SB_KEY=$sb_key SB_CERT=$sb_cert "$here/uki.sh" "$parts/linuxx64.efi.stub" "$parts/vmlinuz" "$parts/os-release" \
    "$probe/cmdline" "$probe/initrd.cpio" "$pcr_key" "$probe/probe.efi" >/dev/null || die "uki.sh could not make the probe UKI"
mdisk=$run/modsig.raw
cp --sparse=always "$IMAGE" "$mdisk"
esp_put "$mdisk" "$probe/probe.efi" "EFI/Linux/lockstep-$v1.efi"
console=$run/console-modsig.log
boot "$mdisk" "$console" "$(free_udp_port)" B
wait_for "modsig-probe: done" "$console" $((boot_limit / 2)) \
    || { tail -n 30 "$console" | tr -d '\r' >&2; die "the module probe did not finish (console above)"; }
stop_vm
probe_result() { grep -ao "modsig-probe: $1: [a-z]*" "$console" | head -n 1 | sed 's/.*: //'; }
grep -aq "modsig-probe: lockdown: .*\[integrity\]" "$console" \
    || { grep -a "modsig-probe" "$console" | tr -d '\r' >&2; die "the kernel did not lock down under Secure Boot"; }
for expect in unsigned:refused self-signed:refused certified:loaded debian:loaded; do
    got=$(probe_result "${expect%%:*}")
    [ "$got" = "${expect#*:}" ] || { grep -a "modsig-probe\|Lockdown\|X.509\|module" "$console" | tr -d '\r' >&2
        die "module ${expect%%:*}: ${got:-no answer}, expected ${expect#*:} (console above)"; }
done
say "modules under Secure Boot, kernel locked down: signed by a module key the Secure Boot key certified: loaded; unsigned: refused ($(grep -ao 'Loading of unsigned module is rejected' "$console" | head -n 1)); signed by a key db does not vouch for: refused ($(grep -ao 'Loading of module with unavailable key is rejected' "$console" | head -n 1))"
rm -f "$mdisk"
say "PASS"
