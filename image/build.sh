#!/usr/bin/env bash
# Builds the Lockstep appliance image: a bootable x86_64 UEFI disk image
# (GPT: ESP with systemd-boot and one unified kernel image, both signed for
# Secure Boot; two A/B slots, each a squashfs root under dm-verity and its
# hash tree, slot A holding this release: image/assemble.sh), its
# manifest, the UKI beside it (what an update sends), and minisign
# signatures of image and manifest. Runs as root on Debian, without Docker or loop
# devices: every partition is built as a file and copied into the disk.
#
# Settings (environment or make variables):
#   VERSION      image version (default: workspace version + git commit)
#   GPU          lavapipe (default) | nvidia: adds Debian's NVIDIA driver
#   DEBUG        0 (default) | 1: adds a root serial console, clearly marked
#   SIGNING_KEY  minisign secret key that signs image and manifest
#                (default: a development key made once in image/out/)
#   SB_KEY, SB_CERT  Secure Boot signing key and certificate (PEM) for
#                systemd-boot and the UKI; the certificate goes into the
#                firmware's db (default: a development pair made once in
#                image/out/, announced; docs/updates.md, "Secure Boot")
#   NVIDIA_BRANCH  GPU=nvidia only: the Debian driver branch, as its package
#                names spell it: empty (default: nvidia-driver,
#                nvidia-kernel-dkms, nvidia-vulkan-icd) or e.g. tesla-470
#                (nvidia-tesla-470-driver, ...). A new branch is this one
#                variable and a rebuild (docs/updates.md, "NVIDIA modules").
#   BOOT_TRIES   how many boots an update gets to come up healthy before
#                systemd-boot returns to the previous slot (default 2)
#   PCR_KEY      RSA private key (PEM) that signs the UKI's expected PCR 11
#                (systemd-measure); nodes seal their device key to its
#                public key, so every image signed with it keeps their
#                identity (default: a development key made once in
#                image/out/; docs/identity.md)
#   PROVISION    a provisioning file (lockstepd config: trusted operator and
#                certifier keys...) placed on the ESP; `lockstep-fleet` can
#                also write it into a built image before flashing
#   LOCK=update  re-pin: rewrite packages.lock from what debootstrap resolved
#   LOCK=warn    build even if Debian moved on from the pins (CI boot tests)
#   OUT          output directory (default image/out)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
OUT=${OUT:-$here/out}
GPU=${GPU:-lavapipe}
DEBUG=${DEBUG:-0}
# make passes unset settings as empty strings: treat those as unset.
for v in VERSION SIGNING_KEY PCR_KEY SB_KEY SB_CERT BOOT_TRIES NVIDIA_BRANCH PROVISION LOCK LOCKSTEPD; do
    [ -n "${!v:-}" ] || unset "$v"
done
SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BOOT_TRIES=${BOOT_TRIES:-2}
[[ "$BOOT_TRIES" =~ ^[1-9]$ ]] || { echo "image: BOOT_TRIES=$BOOT_TRIES: choose 1 to 9" >&2; exit 2; }

die() { echo "image: $*" >&2; exit 2; }
step() { echo "== image: $*" >&2; }

[ "$(id -u)" = 0 ] || die "building an image needs root (debootstrap, chroot); run as root or via sudo"
case "$GPU" in lavapipe|nvidia) ;; *) die "GPU=$GPU: choose lavapipe or nvidia" ;; esac
case "$DEBUG" in 0|1) ;; *) die "DEBUG=$DEBUG: choose 0 or 1" ;; esac
for tool in debootstrap mksquashfs veritysetup sfdisk mkfs.vfat mcopy mmd objcopy minisign python3 openssl sbsign; do
    command -v "$tool" >/dev/null || die "$tool is missing: run 'make image' (it installs the build packages)"
done

commit=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
ws_version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
# The commit count keeps versions in build order: systemd-boot boots the
# highest IMAGE_VERSION (compared as versions), so a later build must sort
# higher, which a commit hash alone would not.
count=$(git -C "$repo" rev-list --count HEAD 2>/dev/null || echo 0)
VERSION=${VERSION:-$ws_version.$count-g$commit}
[[ "$VERSION" =~ ^[A-Za-z0-9._+-]+$ ]] || die "VERSION=$VERSION: use letters, digits and . _ + -"
# Every timestamp in the image is this one, so equal inputs give equal bytes.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
variant=$GPU$([ "$DEBUG" = 1 ] && echo -debug || true)
name=lockstep-$VERSION$([ "$variant" = lavapipe ] || echo "-$variant")
work=$OUT/work-$variant
root=$work/root
mkdir -p "$OUT/debs"

# Deterministic ids (disk GUID, partition UUIDs, verity salt) from the
# version, so two builds of one version lay out the same bytes.
derive() { printf '%s' "lockstep-image:$VERSION:$variant:$1" | sha256sum | cut -c1-"${2:-64}"; }
guid() { local h; h=$(derive "$1" 32); echo "${h:0:8}-${h:8:4}-4${h:13:3}-8${h:17:3}-${h:20:12}"; }

if [ -n "${LOCKSTEPD:-}" ]; then
    daemon_bin=$LOCKSTEPD
else
    step "building lockstepd (release, no test features)"
    (cd "$repo" && cargo build --release --locked -q -p lockstep-daemon)
    daemon_bin=$repo/target/release/lockstepd
fi
[ -x "$daemon_bin" ] || die "no lockstepd binary at $daemon_bin"
# A test build (cargo feature fault-injection) can corrupt results on
# purpose: it must never reach an image.
if fault_out=$(timeout 10 "$daemon_bin" --listen 127.0.0.1:0 --state "$OUT/.fault-check" --file-key \
    --inject-fault op=0 2>&1 </dev/null); then
    die "$daemon_bin accepted --inject-fault: it is a test build; build it with 'cargo build --release -p lockstep-daemon'"
fi
grep -q "needs a test build" <<<"$fault_out" \
    || die "$daemon_bin did not refuse --inject-fault as a release build does: $fault_out"
if panic_out=$(timeout 10 "$daemon_bin" --listen 127.0.0.1:0 --state "$OUT/.fault-check" --file-key \
    --inject-worker-panic 2>&1 </dev/null); then
    die "$daemon_bin accepted --inject-worker-panic: it is a test build; build it with 'cargo build --release -p lockstep-daemon'"
fi
grep -q "needs a test build" <<<"$panic_out" \
    || die "$daemon_bin did not refuse --inject-worker-panic as a release build does: $panic_out"
rm -rf "$OUT/.fault-check"
# The first-enrolment window trusts whoever enrolls first: an operator opens
# it by hand on one node, the image never does.
if grep -rIl -e "enroll-window" -e "enroll_window" "$here/overlay"; then
    die "image/overlay opens a first-enrolment window (above): remove it; nodes get their operators from the provisioning file"
fi

# Secure Boot: systemd-boot and the UKI are signed with SB_KEY; a machine
# whose firmware db holds SB_CERT boots them and nothing else
# (docs/updates.md, "Secure Boot"). The NVIDIA variant's module key is
# certified by it too.
sb_key=${SB_KEY:-$OUT/dev-sb.key}
sb_cert=${SB_CERT:-$OUT/dev-sb.crt}
if [ -z "${SB_KEY:-}" ] && [ ! -f "$sb_key" ]; then
    echo "image: no SB_KEY given: making a DEVELOPMENT Secure Boot key $sb_key and certificate $sb_cert (not for release; enrol the certificate in a test machine's db)" >&2
    (umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -keyout "$sb_key" -out "$sb_cert" \
        -subj "/CN=Lockstep development Secure Boot key (not for release)" -days 3650 2>/dev/null) \
        || die "openssl could not make a Secure Boot key"
fi
[ -f "$sb_key" ] && [ -f "$sb_cert" ] || die "SB_KEY=$sb_key and SB_CERT=$sb_cert must both exist"
echo "image: Secure Boot signing key $sb_key (certificate $sb_cert, sha256 $(openssl x509 -in "$sb_cert" -outform DER | sha256sum | cut -d' ' -f1))" >&2

# One build at a time per output directory; an interrupted build may have
# left its chroot's mounts behind, and rm -rf must never walk into those.
exec 9>"$OUT/.build.lock"
flock -n 9 || die "another image build is running in $OUT"
if [ -d "$work" ]; then
    { findmnt -rn -o TARGET | grep -F "$work/" || true; } | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$work"
fi
mkdir -p "$work"
step "debootstrap $SUITE ($variant) into $root"
packages=$(grep -v '^#' "$here/packages.list" | xargs | tr ' ' ',')
debootstrap --variant=minbase --cache-dir="$OUT/debs" \
    --include="$packages" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log: $work/debootstrap.log)"; }
if [ "$GPU" = nvidia ]; then
    # The proprietary driver, its kernel module built by DKMS against the
    # image's kernel, and its Vulkan ICD. apt (not debootstrap) resolves
    # these: they depend on virtual packages.
    nv=nvidia-${NVIDIA_BRANCH:+$NVIDIA_BRANCH-}
    [[ "${NVIDIA_BRANCH:-}" =~ ^[a-z0-9-]*$ ]] || die "NVIDIA_BRANCH=$NVIDIA_BRANCH: use the branch as Debian's package names spell it (e.g. tesla-470)"
    step "adding the NVIDIA driver (non-free, DKMS: ${nv}driver), its modules signed with a per-build key"
    # The modules are signed with a key made for this build alone and
    # certified by the Secure Boot key (module-sig.sh): under Secure Boot,
    # Debian's kernel trusts a module whose signature chains to a
    # certificate in the firmware's db, so the machines that boot this
    # image load its modules and no others. The key never enters the
    # chroot, whose package scripts run as root: DKMS signs with a key of
    # its own, which is shredded, and every module is signed again here.
    # Only the certificate leaves the build (beside the image, and in the
    # manifest) (docs/updates.md, "NVIDIA modules").
    "$here/module-sig.sh" key "$sb_key" "$sb_cert" "Lockstep NVIDIA modules $VERSION" \
        "$work/module-signing.key" "$work/module-signing.crt"
    openssl x509 -in "$work/module-signing.crt" -outform DER -out "$work/module-signing.der"
    echo "deb $MIRROR $SUITE main contrib non-free non-free-firmware" >"$root/etc/apt/sources.list"
    # The build host's resolver, for apt in the chroot only (the image's
    # own /etc/resolv.conf is set below).
    rm -f "$root/etc/resolv.conf" && cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    for fs in proc sys dev; do mount --bind "/$fs" "$root/$fs"; done
    trap 'for fs in proc sys dev; do umount -l "$root/$fs" 2>/dev/null || true; done' EXIT
    chroot "$root" apt-get update -q >"$work/nvidia.log" 2>&1 &&
        chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            linux-headers-amd64 "${nv}driver" "${nv}vulkan-icd" "${nv}kernel-dkms" >>"$work/nvidia.log" 2>&1 \
        || { tail -n 30 "$work/nvidia.log" >&2; die "installing the NVIDIA driver failed (log: $work/nvidia.log)"; }
    ls "$root"/lib/modules/*/updates/dkms/nvidia*.ko* >/dev/null 2>&1 \
        || die "DKMS built no nvidia module for the image's kernel (log: $work/nvidia.log)"
    # DKMS's own key (made in the chroot) goes; every module DKMS built is
    # signed with this build's key and must verify against the Secure Boot
    # certificate, as the kernel will check it.
    for f in "$root"/var/lib/dkms/mok.key "$root"/var/lib/dkms/mok.pub; do
        [ ! -e "$f" ] || shred -u "$f"
    done
    mods=("$root"/lib/modules/*/updates/dkms/*.ko)
    "$here/module-sig.sh" sign "$work/module-signing.key" "$work/module-signing.crt" "${mods[@]}"
    shred -u "$work/module-signing.key"
    "$here/module-sig.sh" verify "$sb_cert" "${mods[@]}"
    echo "image: ${#mods[@]} DKMS modules signed with this build's module key (certified by $sb_cert)" >&2
    # The compiler and headers DKMS used stay: removing them would remove
    # nvidia-kernel-dkms and its module with them (a prebuilt module
    # package would let this variant drop them).
    for fs in proc sys dev; do umount -l "$root/$fs"; done
    trap - EXIT
fi

step "checking package versions against packages.lock"
chroot "$root" dpkg-query -W -f='${Package}=${Version}\n' | LC_ALL=C sort >"$work/packages.resolved"
lock=$here/packages.lock
[ "$GPU" = nvidia ] && lock=$here/packages-nvidia.lock
if [ "${LOCK:-}" = update ] || [ ! -f "$lock" ]; then
    cp "$work/packages.resolved" "$lock"
    echo "image: pinned $(wc -l <"$lock") packages in $lock (commit it)" >&2
elif ! diff -u "$lock" "$work/packages.resolved" >"$work/packages.diff"; then
    cat "$work/packages.diff" >&2
    [ "${LOCK:-}" = warn ] && echo "image: WARNING: building with versions $lock does not pin (LOCK=warn); the manifest lists what is inside" >&2 || \
    die "Debian resolved other package versions than $lock pins (diff above); review and re-pin with 'make image LOCK=update'"
fi

step "installing lockstepd and the appliance configuration"
cp -a "$here/overlay/." "$root/"
install -m 0755 "$daemon_bin" "$root/usr/bin/lockstepd"
chmod 0755 "$root"/usr/lib/lockstep/* "$root"/etc/initramfs-tools/hooks/* \
    "$root"/etc/initramfs-tools/scripts/local-top/*
# A fixed uid/gid: the state partition keeps its owner across images.
chroot "$root" groupadd --system --gid 990 lockstep
chroot "$root" useradd --system --uid 990 --gid 990 --home-dir /var/lib/lockstep \
    --no-create-home --shell /usr/sbin/nologin lockstep
# No login anywhere: root is locked, every getty and rescue shell masked.
# systemd-pcrphase is masked too: PCR 11 stays as systemd-stub measured
# the UKI, the value its signed policy names (docs/identity.md).
chroot "$root" passwd --lock root >/dev/null
chroot "$root" usermod --shell /usr/sbin/nologin root
for unit in getty@.service serial-getty@.service console-getty.service \
    container-getty@.service autovt@.service rescue.service emergency.service \
    debug-shell.service systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer \
    systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-pcrphase-initrd.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
if [ "$DEBUG" = 1 ]; then
    # DEBUG variant only: a root shell on the serial console, no password.
    rm -f "$root/etc/systemd/system/serial-getty@.service"
    mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
    printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200,38400,9600 %%I $TERM\n' \
        >"$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"
    chroot "$root" usermod --shell /bin/bash root
    mkdir -p "$root/etc/systemd/system/getty.target.wants"
    ln -sf /lib/systemd/system/serial-getty@.service \
        "$root/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
    printf '*** LOCKSTEP DEBUG IMAGE: root console without password. Never deploy. ***\n' >"$root/etc/issue"
fi
if [ "$GPU" = nvidia ]; then
    mkdir -p "$root/etc/systemd/system/lockstepd.service.d"
    # The NVIDIA driver needs its device nodes; everything else stays shut.
    printf '[Service]\nPrivateDevices=no\nDevicePolicy=closed\nDeviceAllow=/dev/nvidiactl rw\nDeviceAllow=/dev/nvidia0 rw\nDeviceAllow=/dev/nvidia-uvm rw\nDeviceAllow=/dev/nvidia-uvm-tools rw\n' \
        >"$root/etc/systemd/system/lockstepd.service.d/nvidia.conf"
fi
for unit in lockstepd.service lockstep-state.service lockstep-identity.service lockstep-boot-report.service \
    lockstep-boot-health.service lockstep-update.path \
    systemd-networkd.service systemd-resolved.service systemd-timesyncd.service nftables.service; do
    chroot "$root" systemctl enable "$unit" >/dev/null 2>&1 || die "cannot enable $unit"
done
ln -sf /run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# An empty machine-id: systemd makes a transient one on the read-only root.
: >"$root/etc/machine-id"
printf 'IMAGE_ID=lockstep\nIMAGE_VERSION=%s\nVARIANT_ID=%s\n' "$VERSION" "$variant" >>"$root/etc/os-release"
# How many boots an update written by this release gets (apply-update).
printf 'BOOT_TRIES=%s\n' "$BOOT_TRIES" >"$root/etc/lockstep/update.conf"

step "building the initramfs (dm-verity root)"
mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT
kver=$(basename "$(ls -d "$root"/lib/modules/* | head -n 1)")
chroot "$root" update-initramfs -u -k "$kver" >"$work/initramfs.log" 2>&1 \
    || { tail -n 20 "$work/initramfs.log" >&2; die "update-initramfs failed"; }
umount "$root/proc"; trap - EXIT
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd"

step "trimming the root"
chroot "$root" dpkg-query -W -f='${Package}\t${Version}\n' | LC_ALL=C sort >"$work/packages.tsv"
# Nothing to install packages with on an appliance, and nothing to read.
chroot "$root" dpkg --purge --force-remove-essential --force-depends apt >/dev/null 2>&1 || true
rm -rf "$root"/boot/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/cache/* "$root"/var/log/* "$root"/var/lib/apt "$root"/tmp/* \
    "$root"/etc/ssh "$root"/usr/share/locale/*
find "$root/usr/share/locale" -mindepth 1 -delete 2>/dev/null || true
mkdir -p "$root/efi" "$root/var/lib/lockstep"
# dbus's postinst made a random id here; the only random bytes in the root.
[ -e "$root/var/lib/dbus/machine-id" ] && ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"

step "squashfs root and dm-verity hash tree"
# mksquashfs takes every timestamp from SOURCE_DATE_EPOCH (exported above).
mksquashfs "$root" "$work/root.squashfs" -comp zstd -noappend -no-progress -quiet \
    -processors 2 >/dev/null
veritysetup format "$work/root.squashfs" "$work/root.verity" \
    --salt="$(derive verity-salt)" --uuid="$(guid verity-uuid)" >"$work/verity.txt"
roothash=$(sed -n 's/^Root hash:[[:space:]]*//p' "$work/verity.txt")
[ ${#roothash} = 64 ] || die "veritysetup printed no root hash"

step "unified kernel image (kernel + initramfs + command line with the root hash + signed PCR policy)"
cmdline="root=/dev/mapper/root ro rootfstype=squashfs lockstep.roothash=$roothash console=tty0 console=ttyS0,115200 panic=10 loglevel=4"
[ "$DEBUG" = 1 ] && cmdline="$cmdline lockstep.debug=1"
printf '%s' "$cmdline" >"$work/cmdline"
# The signed PCR policy (docs/identity.md, "Sealing"): systemd-stub
# measures the UKI's sections into PCR 11; uki.sh predicts that value and
# signs it with the PCR key. A node seals its device key to the PCR key's
# public key (not to one PCR value), so any image whose PCR 11 is signed by
# the same key unseals it, and nothing else does.
pcr_key=${PCR_KEY:-$OUT/dev-pcr.key}
if [ -z "${PCR_KEY:-}" ] && [ ! -f "$pcr_key" ]; then
    echo "image: no PCR_KEY given: making a DEVELOPMENT PCR policy key $pcr_key (not for release)" >&2
    (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pcr_key" 2>/dev/null) \
        || die "openssl could not make a PCR key"
fi
[ -f "$pcr_key" ] || die "PCR_KEY=$pcr_key: no such file"
# The UKI's parts stay in the work directory (and the root and its verity
# tree): the boot test derives the next releases from them (a new version,
# re-squashed root, uki.sh with the same PCR and Secure Boot keys), pushes
# them as updates and checks that the node keeps its identity.
cp "$root/usr/lib/systemd/boot/efi/linuxx64.efi.stub" "$work/linuxx64.efi.stub"
cp "$root/etc/os-release" "$work/os-release"
mkdir -p "$work/parts"
pcr11=$(SB_KEY=$sb_key SB_CERT=$sb_cert "$here/uki.sh" "$work/linuxx64.efi.stub" "$work/vmlinuz" "$work/os-release" \
    "$work/cmdline" "$work/initrd" "$pcr_key" "$work/parts/lockstep.efi") || die "uki.sh could not make the UKI"
openssl pkey -in "$pcr_key" -pubout -out "$work/pcrpkey.pem" 2>/dev/null
sbsign --key "$sb_key" --cert "$sb_cert" --output "$work/parts/BOOTX64.EFI" \
    "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" 2>"$work/sbsign.log" \
    || { cat "$work/sbsign.log" >&2; die "sbsign could not sign systemd-boot"; }
cp "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$work/systemd-bootx64.efi"

step "disk image: ESP, slot A with this release, slot B empty (image/assemble.sh)"
mkdir -p "$OUT"
img=$OUT/$name.raw
ln -f "$work/root.squashfs" "$work/parts/root.squashfs"
ln -f "$work/root.verity" "$work/parts/root.verity"
printf '%s' "$roothash" >"$work/parts/roothash"
slot_json=$(NAME=$name VERSION=$VERSION VARIANT=$variant PROVISION=${PROVISION:-} "$here/assemble.sh" "$work/parts" "$img") \
    || die "assemble.sh could not lay out the disk"
cp "$work/parts/lockstep.efi" "$OUT/$name.efi"
module_cert_sha=""
if [ "$GPU" = nvidia ]; then
    cp "$work/module-signing.der" "$OUT/$name.module-signing.der"
    module_cert_sha=$(sha256sum "$work/module-signing.der" | cut -d' ' -f1)
fi

step "manifest and signatures"
image_sha=$(sha256sum "$img" | cut -d' ' -f1)
python3 - "$work/packages.tsv" >"$OUT/$name.manifest.json" <<EOF
import json, sys
packages = [dict(zip(("name", "version"), l.rstrip("\n").split("\t"))) for l in open(sys.argv[1])]
print(json.dumps({
    "format": 1,
    "name": "$name",
    "version": "$VERSION",
    "variant": "$variant",
    "debug": $([ "$DEBUG" = 1 ] && echo True || echo False),
    "source_commit": "$commit",
    "source_date_epoch": $SOURCE_DATE_EPOCH,
    "suite": "$SUITE",
    "kernel": "$kver",
    "kernel_cmdline": "$cmdline",
    "root_hash": "$roothash",
    "image": "$name.raw",
    "image_sha256": "$image_sha",
    "image_bytes": $(stat -c %s "$img"),
    "lockstepd_sha256": "$(sha256sum "$daemon_bin" | cut -d' ' -f1)",
    "tpm_pcr11_sha256": "$pcr11",
    "tpm_pcr_public_key_sha256": "$(openssl pkey -pubin -in "$work/pcrpkey.pem" -outform DER | sha256sum | cut -d' ' -f1)",
    "secure_boot_cert_sha256": "$(openssl x509 -in "$sb_cert" -outform DER | sha256sum | cut -d' ' -f1)",
    "boot_tries": $BOOT_TRIES,
    "module_signing_cert_sha256": "$module_cert_sha" or None,
    "slot": json.loads(r"""$slot_json"""),
    "packages": packages,
}, indent=2, sort_keys=True))
EOF
key=${SIGNING_KEY:-$OUT/dev-signing.key}
if [ -z "${SIGNING_KEY:-}" ] && [ ! -f "$key" ]; then
    echo "image: no SIGNING_KEY given: making a DEVELOPMENT signing key $key (not for release)" >&2
    minisign -G -W -p "$OUT/dev-signing.pub" -s "$key" >/dev/null
fi
for f in "$img" "$OUT/$name.manifest.json"; do
    minisign -S -s "$key" -m "$f" -t "lockstep image $name ($(basename "$f"))" </dev/null >/dev/null \
        || die "minisign could not sign $f (encrypted key? sign by hand: minisign -S -s KEY -m $f)"
done
rm -rf "$work/root"
echo "image: $img"
echo "image: root hash $roothash, sha256 $image_sha"
echo "image: PCR 11 (sha256) $pcr11, signed by $pcr_key"
echo "image: UKI and systemd-boot signed for Secure Boot by $sb_cert"
