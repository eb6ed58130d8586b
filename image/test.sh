#!/usr/bin/env bash
# Boot test of a built image (image/build.sh): boots it in QEMU with OVMF
# and a software TPM 2.0 (swtpm, its EK certificate from a local CA),
# forwards the node's UDP port, waits for lockstepd, reads the node id from
# the console, submits a job with `lockstep submit`, verifies the receipt
# with the stock minisign, checks that the root is read-only and verified.
# The device key (docs/identity.md):
#   1. a fresh image makes and seals a key, serves, attests, enrolls;
#   2. a reboot keeps the node id; operators written onto the ESP change
#      nothing;
#   3. the same disk with another TPM cannot unseal, does not serve, and
#      says why on the console;
#   4. the same disk with a modified UKI cannot unseal; the same change
#      made as a release would be (PCR 11 signed with the PCR key) unseals
#      the same key, and its quote shows the predicted PCR 11;
#   5. a fresh image on the other TPM serves under a new id, and attestation
#      transcripts with a forged quote, a wrong nonce or the other TPM's
#      quote are refused;
# then a copy whose root partition has one flipped byte never serves.
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
for tool in swtpm swtpm_setup swtpm_localca openssl; do
    command -v "$tool" >/dev/null || die "$tool missing: run 'make image-test' (it installs swtpm, swtpm-tools and openssl)"
done
MANIFEST=${MANIFEST:-${IMAGE%.raw}.manifest.json}
[ -f "$MANIFEST" ] || die "no manifest beside the image ($MANIFEST)"
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
fleet_bin=$repo/target/release/lockstep-fleet
[ -x "$lockstep" ] && [ -x "$fleet_bin" ] || (cd "$repo" && cargo build --release --locked -q -p lockstep-cli -p lockstep-fleet)
run=$(mktemp -d "${TMPDIR:-/tmp}/lockstep-image-test.XXXXXX")
qemu_pid=""
tpm_pid=""
cleanup() {
    for p in $qemu_pid $tpm_pid; do kill "$p" 2>/dev/null || true; done
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

free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# boot DISK CONSOLE PORT TPM: starts swtpm (TPM A or B: its state persists
# across boots, as a machine's TPM does) and QEMU in the background.
boot() {
    local sock=$run/tpm-$4.sock
    rm -f "$sock"
    swtpm socket --tpm2 --tpmstate dir="$run/tpm-$4" --ctrl type=unixio,path="$sock" --terminate \
        --log file="$run/tpm-$4.log" &
    tpm_pid=$!
    for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
    [ -S "$sock" ] || die "swtpm for TPM $4 did not start"
    cp "$ovmf_vars" "$run/vars-$(basename "$1").fd"
    qemu-system-x86_64 -machine q35,accel="$ACCEL" -cpu "$cpu" -smp 2 -m 2048 \
        -drive if=pflash,format=raw,unit=0,readonly=on,file="$ovmf_code" \
        -drive if=pflash,format=raw,unit=1,file="$run/vars-$(basename "$1").fd" \
        -drive if=virtio,format=raw,file="$1" \
        -chardev socket,id=chrtpm,path="$sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
        -device tpm-tis,tpmdev=tpm0 \
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

stop_vm() {
    kill "$qemu_pid" 2>/dev/null || true; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=""
    kill "$tpm_pid" 2>/dev/null || true; wait "$tpm_pid" 2>/dev/null || true; tpm_pid=""
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
# same node id, and the sealed operators still rule.
printf 'uncertified = true\ntrusted_operators = ["%s"]\n' "$intruder" >"$run/provision-intruder.toml"
esp_put "$disk" "$run/provision-intruder.toml" lockstep/provision.toml
port=$(free_udp_port)
serve "$disk" "$run/console-reboot.log" "$port" A
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
stop_vm

# 3. The same disk in another machine: TPM B cannot unseal.
refuses "$disk" "$run/console-other-tpm.log" B "same disk, other TPM"

# 4. A modified UKI on TPM A: one changed byte in its command line.
uki=EFI/Linux/$(basename "$IMAGE" .raw).efi
esp_get "$disk" "$uki" "$run/uki-orig.efi" || die "no UKI at $uki on the ESP"
cp "$run/uki-orig.efi" "$run/uki.efi"
python3 - "$run/uki.efi" <<'PY'
import sys
p = sys.argv[1]
d = open(p, "rb").read()
assert d.count(b"loglevel=4") == 1, "no unique loglevel=4 in the UKI's command line"
open(p, "wb").write(d.replace(b"loglevel=4", b"loglevel=5"))
PY
moddisk=$run/modified-uki.raw
cp --sparse=always "$disk" "$moddisk"
esp_put "$moddisk" "$run/uki.efi" "$uki"
refuses "$moddisk" "$run/console-modified-uki.log" A "modified UKI (its command line)"
rm -f "$moddisk"

# 4b. The next release: the same change, but the UKI made by uki.sh and its
# PCR 11 signed with the image's PCR key, as a future image would be. The
# node unseals the same key: same node id, same operators.
variant=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["variant"])' "$MANIFEST")
epoch=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["source_date_epoch"])' "$MANIFEST")
parts=$OUT/work-$variant
pcr_key=${PCR_KEY:-$OUT/dev-pcr.key}
for f in linuxx64.efi.stub vmlinuz os-release cmdline initrd; do
    [ -f "$parts/$f" ] || die "$parts/$f missing: the UKI's parts come from 'make image' (run it again)"
done
[ -f "$pcr_key" ] || die "no PCR key at $pcr_key (give PCR_KEY=, the key the image was built with)"
# The parts must be this image's: rebuilt, they give its UKI byte for byte.
SOURCE_DATE_EPOCH=$epoch "$here/uki.sh" "$parts/linuxx64.efi.stub" "$parts/vmlinuz" "$parts/os-release" \
    "$parts/cmdline" "$parts/initrd" "$pcr_key" "$run/uki-rebuilt.efi" >/dev/null
cmp -s "$run/uki-rebuilt.efi" "$run/uki-orig.efi" \
    || die "the UKI rebuilt from $parts differs from the image's: the parts are not this image's"
sed 's/loglevel=4/loglevel=5/' "$parts/cmdline" >"$run/cmdline-next"
pcr11_next=$(SOURCE_DATE_EPOCH=$epoch "$here/uki.sh" "$parts/linuxx64.efi.stub" "$parts/vmlinuz" \
    "$parts/os-release" "$run/cmdline-next" "$parts/initrd" "$pcr_key" "$run/uki-next.efi")
nextdisk=$run/next-release.raw
cp --sparse=always "$disk" "$nextdisk"
esp_put "$nextdisk" "$run/uki-next.efi" "$uki"
port=$(free_udp_port)
serve "$nextdisk" "$run/console-next.log" "$port" A
[ "$node" = "$key" ] || die "the re-signed UKI gave another node id ($node)"
python3 - "$MANIFEST" "$pcr11_next" "$run/next.manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["name"] += "-next"; m["tpm_pcr11_sha256"] = sys.argv[2]
json.dump(m, open(sys.argv[3], "w"))
PY
if "$lockstep" attest --node "127.0.0.1:$port" --node-key "$key" --ek-roots "$run/ek-roots.pem" \
    --accept-manifest "$MANIFEST" >"$run/attest-next-old.txt" 2>&1; then
    die "the next release attested as the old one"
fi
"$lockstep" attest --node "127.0.0.1:$port" --node-key "$key" --ek-roots "$run/ek-roots.pem" \
    --accept-manifest "$run/next.manifest.json" >/dev/null \
    || die "the next release's quote does not show the PCR 11 uki.sh predicted ($pcr11_next)"
stop_vm
rm -f "$nextdisk"
say "next release (command line changed, PCRs 11+12 re-signed with the PCR key): unsealed, same node id, quote shows the predicted PCR 11 $pcr11_next"

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
boot "$bad" "$console" "$(free_udp_port)" B
if wait_for "lockstepd listening on" "$console" $((boot_limit / 2)); then
    die "an image with a modified root reached a serving state"
fi
grep -aq "ROOT VERIFICATION FAILED" "$console" \
    || { tail -n 30 "$console" >&2; die "the tampered image did not report a verity failure (console above)"; }
stop_vm
say "tampered root refused: dm-verity verification failed, lockstepd never started"
say "PASS"
