#!/usr/bin/env bash
# Assembles a unified kernel image (UKI) whose PCRs 11 and 12 are signed:
# systemd's stub with the kernel, os-release, command line and initramfs as
# sections, plus the signed PCR policy (.pcrsig: systemd-measure's
# prediction of PCR 11, and of PCRs 11+12 together, signed with the PCR
# key) and the PCR public key (.pcrpkey). A node
# seals its device key to that public key, so any UKI made here with the
# same PCR key unseals it, and no other UKI does (docs/identity.md,
# "Sealing"). image/build.sh uses it for every image; image/test.sh uses it
# to make "the next release" of an image.
#
#   uki.sh STUB LINUX OSREL CMDLINE INITRD PCR_KEY OUT
#
# With SB_KEY and SB_CERT (PEM) in the environment, OUT is signed for
# Secure Boot with sbsign (docs/updates.md, "Secure Boot"); PCR 11 is
# predicted over the sections, which the signature does not change.
# Prints the predicted PCR 11 (SHA-256 bank, hex) on stdout. Equal inputs
# and SOURCE_DATE_EPOCH give an equal unsigned UKI.
set -euo pipefail
die() { echo "uki: $*" >&2; exit 2; }
[ $# = 7 ] || die "usage: uki.sh STUB LINUX OSREL CMDLINE INITRD PCR_KEY OUT"
stub=$1 linux=$2 osrel=$3 cmdline=$4 initrd=$5 pcr_key=$6 out=$7
for f in "$stub" "$linux" "$osrel" "$cmdline" "$initrd" "$pcr_key"; do
    [ -f "$f" ] || die "$f: no such file"
done
for tool in objcopy openssl swtpm python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (make image-deps installs it)"
done
measure=/usr/lib/systemd/systemd-measure
[ -x "$measure" ] || die "$measure is missing (systemd >= 252)"
tmp=$(mktemp -d)
tpmpid=""
trap '[ -z "$tpmpid" ] || kill "$tpmpid" 2>/dev/null || true; rm -rf "$tmp"' EXIT

openssl pkey -in "$pcr_key" -pubout -out "$tmp/pcrpkey.pem" 2>/dev/null \
    || die "$pcr_key is not a PEM private key"
args=(--linux="$linux" --osrel="$osrel" --cmdline="$cmdline" --initrd="$initrd"
    --pcrpkey="$tmp/pcrpkey.pem" --bank=sha256 --phase=)
# --phase= (empty): PCR 11 as systemd-stub leaves it, with no boot-phase
# words after it: the image masks systemd-pcrphase (its initrd has no
# phase units), so that is the value lockstepd's credential is opened
# under and the value a quote shows.
pcr11=$("$measure" calculate "${args[@]}" 2>/dev/null | sed -n 's/^11:sha256=//p')
[ ${#pcr11} = 64 ] || die "systemd-measure predicted no PCR 11 value"
# systemd-measure computes the policy digest with a trial session on a
# TPM; the build host needs none of its own: a throw-away swtpm serves.
mkdir "$tmp/tpm"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
swtpm socket --tpm2 --tpmstate dir="$tmp/tpm" --flags startup-clear,not-need-init \
    --server type=tcp,port="$port",bindaddr=127.0.0.1 --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
    >"$tmp/swtpm.log" 2>&1 &
tpmpid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$measure" sign "${args[@]}" --private-key="$pcr_key" --public-key="$tmp/pcrpkey.pem" \
    --tpm2-device="swtpm:host=127.0.0.1,port=$port" >"$tmp/pcrsig.json" 2>"$tmp/measure.log" \
    || { cat "$tmp/measure.log" >&2; die "systemd-measure could not sign PCR 11"; }
[ -s "$tmp/pcrsig.json" ] || die "systemd-measure signed nothing"
# PCR 12 holds the kernel command line as systemd-boot passes it (it
# measures it once, UTF-16 with its NUL): for this UKI that is its own
# .cmdline, so the value is known here. systemd-stub measures it a second
# time only without Secure Boot: with Secure Boot on it ignores what the
# loader passes and uses its own .cmdline, which PCR 11 covers. A second
# entry signs PCRs 11 and 12 together for each case (systemd-measure in
# systemd 252 signs PCR 11 alone): the node's seal names both PCRs, so a
# boot entry that passes another command line cannot unseal, and a release
# with a new command line (a new root hash) can. Signing both cases is
# safe: each holds this UKI's own command line, and PCR 7 in the seal
# still tells a Secure Boot machine from one without. The PolicyPCR digest
# is computed as the TPM does; the assert checks the computation against
# systemd-measure's own for PCR 11.
python3 - "$tmp/pcrsig.json" "$cmdline" "$pcr11" "$pcr_key" <<'PY' || die "signing PCRs 11+12 failed"
import base64, hashlib, json, struct, subprocess, sys
sig_path, cmdline_path, pcr11_hex, key = sys.argv[1:5]
h = lambda b: hashlib.sha256(b).digest()
measured = h((open(cmdline_path, "rb").read().decode() + "\0").encode("utf-16-le"))
def pcr12(extends):  # systemd-boot; then systemd-stub, without Secure Boot
    v = bytes(32)
    for _ in range(extends):
        v = h(v + measured)
    return v
def policy_pcr(select, values):  # TPM2_PolicyPCR from an empty policy, SHA-256 bank
    pcrs = struct.pack(">IHB", 1, 0x000B, 3) + bytes(select)
    return h(bytes(32) + struct.pack(">I", 0x17F) + pcrs + h(b"".join(values)))
doc = json.load(open(sig_path))
only11 = doc["sha256"][0]
assert only11["pcrs"] == [11] and policy_pcr([0, 0x08, 0], [bytes.fromhex(pcr11_hex)]).hex() == only11["pol"]
for extends in (1, 2):  # Secure Boot on, off
    pol = policy_pcr([0, 0x18, 0], [bytes.fromhex(pcr11_hex), pcr12(extends)])
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=pol, capture_output=True, check=True).stdout
    doc["sha256"].append({"pcrs": [11, 12], "pkfp": only11["pkfp"], "pol": pol.hex(), "sig": base64.b64encode(sig).decode()})
json.dump(doc, open(sig_path, "w"), separators=(",", ":"))
PY

objcopy \
    --add-section .osrel="$osrel" --change-section-vma .osrel=0x20000 \
    --add-section .cmdline="$cmdline" --change-section-vma .cmdline=0x30000 \
    --add-section .pcrsig="$tmp/pcrsig.json" --change-section-vma .pcrsig=0x40000 \
    --add-section .pcrpkey="$tmp/pcrpkey.pem" --change-section-vma .pcrpkey=0x50000 \
    --add-section .linux="$linux" --change-section-vma .linux=0x2000000 \
    --add-section .initrd="$initrd" --change-section-vma .initrd=0x3000000 \
    "$stub" "$out"
# objcopy stamps the PE header with the current time (and a checksum over
# it): stamp SOURCE_DATE_EPOCH instead and recompute the checksum, so equal
# inputs give an equal UKI.
python3 - "$out" "${SOURCE_DATE_EPOCH:-0}" <<'PY'
import struct, sys
path, epoch = sys.argv[1], int(sys.argv[2])
raw = open(path, "rb").read()
d = bytearray(raw)
pe = struct.unpack_from("<I", d, 0x3C)[0]
assert d[pe:pe + 4] == b"PE\0\0", "not a PE file"
struct.pack_into("<I", d, pe + 8, epoch & 0xFFFFFFFF)
ck = pe + 24 + 64  # CheckSum in the optional header
struct.pack_into("<I", d, ck, 0)
total = 0
for (w,) in struct.iter_unpack("<H", bytes(d) + b"\0" * (len(d) % 2)):
    total += w
    total = (total & 0xFFFF) + (total >> 16)
struct.pack_into("<I", d, ck, (total + len(raw)) & 0xFFFFFFFF)
open(path, "wb").write(d)
PY
if [ -n "${SB_KEY:-}" ] || [ -n "${SB_CERT:-}" ]; then
    [ -f "${SB_KEY:-}" ] && [ -f "${SB_CERT:-}" ] || die "SB_KEY and SB_CERT must both name files"
    command -v sbsign >/dev/null || die "sbsign is missing (make image-deps installs sbsigntool)"
    sbsign --key "$SB_KEY" --cert "$SB_CERT" --output "$out.signed" "$out" 2>"$tmp/sbsign.log" \
        || { cat "$tmp/sbsign.log" >&2; die "sbsign could not sign $out"; }
    mv "$out.signed" "$out"
fi
echo "$pcr11"
