#!/usr/bin/env bash
# The browser the UI tests drive: Debian's chromium (Playwright's own browser download cannot
# work on machines without internet). Idempotent: does nothing when chromium is installed.
# The Python side (playwright, which bundles its node driver) comes from pyproject's dev extra.
set -euo pipefail
CHROMIUM="${LOOKOUT_TEST_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing Debian's chromium for the UI tests" >&2
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
