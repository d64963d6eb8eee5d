#!/usr/bin/env bash
# promtool checks the alert rules (tests/e2e/test_monitoring.py); Debian's prometheus package provides it. Best effort:
# without it the test checks the rules' structure itself, so a machine that cannot install it still runs make test.
set -uo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "promtool not installed (no root): the monitoring test checks structure only" >&2; exit 0; }
  SUDO=sudo
else
  SUDO=
fi
echo "promtool not found; installing Debian's prometheus package (for promtool)..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
  || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; } \
  || echo "could not install prometheus: the monitoring test checks the rules' structure only" >&2
exit 0
