#!/usr/bin/env bash
# Kernel module signatures that a Secure Boot machine's kernel trusts
# through its firmware db (docs/updates.md, "NVIDIA modules").
#
# Debian's kernel checks a module's signature against its built-in keys,
# the machine owner keys, and the certificates in the firmware's db (the
# platform keyring: Debian's KEYS-Make-use-of-platform-keyring-for-module-
# signature patch). A module key certified by the Secure Boot key, with its
# certificate carried inside each module's signature, is therefore trusted
# by exactly the machines that boot the image: the kernel finds the
# certificate's issuer (the Secure Boot certificate) in db and checks the
# chain. The kernel's own sign-file leaves the certificate out, so this
# script signs instead of it.
#
#   module-sig.sh key SB_KEY SB_CERT SUBJECT KEY_OUT CERT_OUT
#       a new RSA-3072 module key and its certificate (PEM), issued by the
#       Secure Boot key: code signing only, not a CA.
#   module-sig.sh sign KEY CERT MODULE...
#       replaces each module's appended signature (if any) with a PKCS#7
#       (CMS) SHA-256 signature by KEY that carries CERT.
#   module-sig.sh verify SB_CERT MODULE...
#       each module's appended signature verifies and chains to SB_CERT.
#   module-sig.sh strip MODULE...
#       removes each module's appended signature.
set -euo pipefail
die() { echo "module-sig: $*" >&2; exit 2; }
command -v openssl >/dev/null || die "openssl is missing (make image-deps installs it)"

magic='~Module signature appended~'
magic_len=28 # the magic and its newline
info_len=12  # struct module_signature: 8 one-byte fields, a big-endian u32

# signed_len MODULE: the module's length without its appended signature.
signed_len() {
    local size tail sig_len
    size=$(stat -c %s "$1")
    if [ "$size" -lt $((magic_len + info_len)) ] \
        || ! tail -c "$magic_len" "$1" | cmp -s - <(printf '%s\n' "$magic"); then
        echo "$size"
        return
    fi
    tail=$(tail -c $((magic_len + info_len)) "$1" | head -c "$info_len" | od -An -v -tu1 | xargs)
    read -r -a b <<<"$tail"
    [ "${b[2]}" = 2 ] || die "$1: its signature is not PKCS#7 (id_type ${b[2]})"
    sig_len=$(( (b[8] << 24) | (b[9] << 16) | (b[10] << 8) | b[11] ))
    [ "$sig_len" -gt 0 ] && [ $((size - magic_len - info_len - sig_len)) -gt 0 ] \
        || die "$1: its appended signature is longer than the module"
    echo $((size - magic_len - info_len - sig_len))
}

# be32 N: N as four big-endian bytes.
be32() { printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"; }

case "${1:-}" in
key)
    [ $# = 6 ] || die "usage: module-sig.sh key SB_KEY SB_CERT SUBJECT KEY_OUT CERT_OUT"
    sb_key=$2 sb_cert=$3 subject=$4 key_out=$5 cert_out=$6
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # A positive 8-byte serial with its top bit clear: the kernel and modinfo
    # print it as the same bytes openssl does.
    serial=0x1$(openssl rand -hex 8 | cut -c2-16)
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=codeSigning" "subjectKeyIdentifier=hash" \
        "authorityKeyIdentifier=keyid,issuer" >"$tmp/ext"
    (umask 077 && openssl req -new -newkey rsa:3072 -nodes -sha256 -subj "/CN=$subject/" \
        -keyout "$key_out" -out "$tmp/csr" 2>"$tmp/log") \
        || { cat "$tmp/log" >&2; die "openssl could not make the module key"; }
    openssl x509 -req -in "$tmp/csr" -CA "$sb_cert" -CAkey "$sb_key" -set_serial "$serial" \
        -days 36500 -sha256 -extfile "$tmp/ext" -out "$cert_out" 2>"$tmp/log" \
        || { cat "$tmp/log" >&2; die "openssl could not certify the module key with $sb_key"; }
    ;;
sign)
    [ $# -ge 4 ] || die "usage: module-sig.sh sign KEY CERT MODULE..."
    key=$2 cert=$3
    shift 3
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for ko in "$@"; do
        [ -f "$ko" ] || die "$ko: no such file"
        head -c "$(signed_len "$ko")" "$ko" >"$tmp/module"
        # -noattr: no signed attributes, as sign-file writes them; the
        # signer's certificate is included (openssl's default).
        openssl cms -sign -binary -noattr -nosmimecap -md sha256 -outform DER \
            -in "$tmp/module" -signer "$cert" -inkey "$key" -out "$tmp/sig" 2>"$tmp/log" \
            || { cat "$tmp/log" >&2; die "$ko: openssl could not sign it"; }
        {
            cat "$tmp/module" "$tmp/sig"
            printf '\0\0\2\0\0\0\0\0'
            be32 "$(stat -c %s "$tmp/sig")"
            printf '%s\n' "$magic"
        } >"$tmp/signed"
        cat "$tmp/signed" >"$ko"
    done
    ;;
verify)
    [ $# -ge 3 ] || die "usage: module-sig.sh verify SB_CERT MODULE..."
    sb_cert=$2
    shift 2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for ko in "$@"; do
        [ -f "$ko" ] || die "$ko: no such file"
        len=$(signed_len "$ko")
        [ "$len" != "$(stat -c %s "$ko")" ] || die "$ko: not signed"
        head -c "$len" "$ko" >"$tmp/module"
        size=$(stat -c %s "$ko")
        tail -c $((size - len)) "$ko" | head -c $((size - len - magic_len - info_len)) >"$tmp/sig"
        # -partial_chain: the Secure Boot certificate is the trust anchor
        # whether or not it is self-signed, as in the kernel's keyring.
        openssl cms -verify -binary -inform DER -in "$tmp/sig" -content "$tmp/module" \
            -CAfile "$sb_cert" -partial_chain -purpose any -out /dev/null 2>"$tmp/log" \
            || { cat "$tmp/log" >&2; die "$ko: its signature does not verify against $sb_cert"; }
    done
    ;;
strip)
    [ $# -ge 2 ] || die "usage: module-sig.sh strip MODULE..."
    shift
    for ko in "$@"; do
        [ -f "$ko" ] || die "$ko: no such file"
        truncate -s "$(signed_len "$ko")" "$ko"
    done
    ;;
*) die "usage: module-sig.sh key|sign|verify|strip ... (see the head of this file)" ;;
esac
