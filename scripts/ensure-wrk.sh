#!/usr/bin/env bash
# Make sure wrk (a compiled HTTP load generator) is on the machine for `make bench`; install Debian's if not.
# The benchmark never drives the services from a Python client: on a small machine it would compete for the same
# cores and measure itself.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
echo "wrk not found; installing Debian's wrk package..."
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install wrk" >&2; exit 1; }
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
command -v wrk >/dev/null
