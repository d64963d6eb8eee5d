#!/usr/bin/env bash
# Make sure the font the post channel prints Korean letters in is on the machine (notify's letter_font: Debian's
# fonts-nanum, NanumGothic); install Debian's package if not.
set -euo pipefail
FONT=/usr/share/fonts/truetype/nanum/NanumGothic.ttf
if [ -f "$FONT" ]; then
  exit 0
fi
echo "Korean font for letters not found; installing Debian's fonts-nanum package..."
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install fonts-nanum" >&2; exit 1; }
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends fonts-nanum >/dev/null
test -f "$FONT"
