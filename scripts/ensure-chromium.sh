#!/usr/bin/env bash
# Make sure Debian's chromium is on the machine for the portal's browser tests and screenshots (Playwright from PyPI
# drives it; Playwright's own browser download does not work here); install Debian's package if not.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "Chromium not found; installing Debian's chromium package..."
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install chromium" >&2; exit 1; }
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
test -x /usr/bin/chromium
