#!/usr/bin/env bash
# Lays out an appliance disk image from one release's parts
# (docs/updates.md, "Slots"):
#
#   GPT: ESP (systemd-boot and this release's UKI), slot A
#   (lockstep-root-a, lockstep-verity-a) holding this release, slot B
#   (lockstep-root-b, lockstep-verity-b) empty until the first update,
#   then free space where the first boot makes the state and data
#   partitions.
#
# A slot's partitions carry the UUIDs of its root hash's two halves (the
# root, then the verity tree), as systemd's discoverable partitions do for
# usrhash=: the UKI's command line names the root hash, and the initramfs
# opens whichever slot holds that root. An update sets the UUIDs of the
# slot it writes the same way, so a UKI can only ever open its own root.
#
#   assemble.sh PARTS OUT.raw
#
# PARTS holds BOOTX64.EFI (systemd-boot), lockstep.efi (the UKI; both
# signed for Secure Boot by the caller), root.squashfs, root.verity and
# roothash (64 hex). Settings (environment): VERSION and VARIANT (names
# and deterministic ids), NAME (the image's name: the UKI's copy beside
# OUT.raw is NAME.efi, which the caller writes), SOURCE_DATE_EPOCH, PROVISION (a provisioning
# file for the ESP), SLOT_ROOT_MIB, SLOT_VERITY_MIB, ESP_MIB and
# STATE_SPACE_MIB (sizes; defaults leave room for larger releases).
#
# Prints the manifest's "slot" object on stdout (JSON): the UKI's file
# beside the image and its name on the ESP, and the byte ranges of slot A's root and verity tree inside
# OUT.raw, with their lengths and SHA-256: what `lockstep-fleet image push`
# sends to a node.
set -euo pipefail
die() { echo "assemble: $*" >&2; exit 2; }
[ $# = 2 ] || die "usage: assemble.sh PARTS OUT.raw"
parts=$1 img=$2
for f in BOOTX64.EFI lockstep.efi root.squashfs root.verity roothash; do
    [ -f "$parts/$f" ] || die "$parts/$f: no such file"
done
: "${VERSION:?VERSION is required}" "${VARIANT:?VARIANT is required}"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
roothash=$(cat "$parts/roothash")
[[ "$roothash" =~ ^[0-9a-f]{64}$ ]] || die "$parts/roothash is not 64 lower-case hex"

derive() { printf '%s' "lockstep-image:$VERSION:$VARIANT:$1" | sha256sum | cut -c1-"${2:-64}"; }
guid() { local h; h=$(derive "$1" 32); echo "${h:0:8}-${h:8:4}-4${h:13:3}-8${h:17:3}-${h:20:12}"; }
as_uuid() { echo "${1:0:8}-${1:8:4}-${1:12:4}-${1:16:4}-${1:20:12}"; }
mib() { echo $(( ($(stat -c %s "$1") + 1048575) >> 20 )); }

uki_name=lockstep-$VERSION.efi
root_mib=$(mib "$parts/root.squashfs")
verity_mib=$(mib "$parts/root.verity")
uki_mib=$(mib "$parts/lockstep.efi")
# Room for releases larger than this one: an update must fit the slot it
# is written to, and the layout is fixed when the disk is flashed.
SLOT_ROOT_MIB=${SLOT_ROOT_MIB:-$(( root_mib * 3 / 2 + 64 ))}
SLOT_VERITY_MIB=${SLOT_VERITY_MIB:-$(( verity_mib * 3 / 2 + 8 ))}
# The running UKI, the next one and a spare: an update writes the new UKI
# before the old one of the slot it replaces is gone.
ESP_MIB=${ESP_MIB:-$(( uki_mib * 3 + 32 ))}
STATE_SPACE_MIB=${STATE_SPACE_MIB:-256}
[ "$SLOT_ROOT_MIB" -ge "$root_mib" ] && [ "$SLOT_VERITY_MIB" -ge "$verity_mib" ] \
    || die "the slots (SLOT_ROOT_MIB=$SLOT_ROOT_MIB, SLOT_VERITY_MIB=$SLOT_VERITY_MIB) are smaller than this release"
[ "$ESP_MIB" -ge $(( uki_mib * 2 + 8 )) ] || die "ESP_MIB=$ESP_MIB cannot hold two UKIs of $uki_mib MiB"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# No file-system label: mkfs.vfat stamps the label's directory entry with
# the time of the build. The partition is found by its GPT name, ESP.
mkfs.vfat -C -F 32 -i "$(derive esp-id 8)" "$work/esp.img" $((ESP_MIB * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/Linux ::/loader ::/lockstep
# timeout 0: no menu. systemd-boot boots the newest entry whose tries are
# not used up (the UKIs' IMAGE_VERSION, compared as versions); an update's
# UKI arrives as NAME+TRIES.efi and is blessed (renamed to NAME.efi) only
# after the boot is healthy (docs/updates.md).
printf 'timeout 0\neditor no\nconsole-mode keep\n' >"$work/loader.conf"
cp "$parts/BOOTX64.EFI" "$work/BOOTX64.EFI"
cp "$parts/lockstep.efi" "$work/$uki_name"
# -m keeps the files' times, which are SOURCE_DATE_EPOCH: FAT entries do
# not record when the build ran.
touch -d "@$SOURCE_DATE_EPOCH" "$work/BOOTX64.EFI" "$work/$uki_name" "$work/loader.conf"
mcopy -m -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -m -i "$work/esp.img" "$work/$uki_name" "::/EFI/Linux/$uki_name"
mcopy -m -i "$work/esp.img" "$work/loader.conf" ::/loader/loader.conf
if [ -n "${PROVISION:-}" ]; then
    [ -f "$PROVISION" ] || die "PROVISION=$PROVISION: no such file"
    mcopy -i "$work/esp.img" "$PROVISION" ::/lockstep/provision.toml
fi

total=$((1 + ESP_MIB + 2 * (SLOT_ROOT_MIB + SLOT_VERITY_MIB) + STATE_SPACE_MIB + 1))
rm -f "$img"
truncate -s "${total}M" "$img"
root_type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
verity_type=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5
sfdisk --quiet --no-reread --no-tell-kernel "$img" <<EOF
label: gpt
label-id: $(guid disk)
first-lba: 2048
start=1MiB, size=${ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$(guid esp), name="ESP"
size=${SLOT_ROOT_MIB}MiB, type=$root_type, uuid=$(as_uuid "${roothash:0:32}"), name="lockstep-root-a"
size=${SLOT_VERITY_MIB}MiB, type=$verity_type, uuid=$(as_uuid "${roothash:32:32}"), name="lockstep-verity-a"
size=${SLOT_ROOT_MIB}MiB, type=$root_type, uuid=$(guid root-b), name="lockstep-root-b"
size=${SLOT_VERITY_MIB}MiB, type=$verity_type, uuid=$(guid verity-b), name="lockstep-verity-b"
EOF
start_of() { # partition number -> byte offset
    sfdisk --json "$img" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$1-1]['start'] * 512)"
}
place() { # file, partition number
    dd if="$1" of="$img" bs=1M seek="$(( $(start_of "$2") >> 20 ))" conv=notrunc,sparse status=none
}
place "$work/esp.img" 1
place "$parts/root.squashfs" 2
place "$parts/root.verity" 3

sha() { sha256sum "$1" | cut -d' ' -f1; }
python3 - <<EOF
import json
print(json.dumps({
    "uki": {"file": "${NAME:-lockstep-$VERSION}.efi", "esp_name": "$uki_name", "bytes": $(stat -c %s "$parts/lockstep.efi"), "sha256": "$(sha "$parts/lockstep.efi")"},
    "root": {"offset": $(start_of 2), "bytes": $(stat -c %s "$parts/root.squashfs"), "sha256": "$(sha "$parts/root.squashfs")"},
    "verity": {"offset": $(start_of 3), "bytes": $(stat -c %s "$parts/root.verity"), "sha256": "$(sha "$parts/root.verity")"},
    "root_partition_bytes": $((SLOT_ROOT_MIB << 20)),
    "verity_partition_bytes": $((SLOT_VERITY_MIB << 20)),
}, sort_keys=True))
EOF
