#!/usr/bin/env bash
# System packages the test suite needs, installed from Debian when missing. Idempotent: on a
# machine that has them this does nothing. tests/e2e/test_nginx.py runs Debian's nginx in front
# of the API, with a throwaway TLS certificate made by openssl. tests/workers/detectors/test_text.py
# runs the optional tesseract text engine (Lookout itself does not need it: PP-OCR is the default).
set -euo pipefail

missing=()
[ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr tesseract-ocr-eng)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-system-deps: missing ${missing[*]} and this is not a Debian-like system;" \
         "install them by hand (nginx 1.22 or newer at /usr/sbin/nginx)" >&2
    exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "ensure-system-deps: missing ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

echo "ensure-system-deps: installing ${missing[*]} from Debian" >&2
# Keep the nginx package's own service from starting on port 80: the tests run their own nginx.
# policy-rc.d is Debian's switch for that; add one only if there is none, and remove it after.
POLICY=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    added_policy=1
fi
cleanup() { if [ -n "$added_policy" ]; then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
/usr/sbin/nginx -v
