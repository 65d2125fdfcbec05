#!/usr/bin/env bash
# The system browser that tests/test_demo.py drives for its real-browser test: Debian's chromium,
# used through playwright's Python package (installed by the `dev` extra) with
# executable_path=/usr/bin/chromium. Never `playwright install`: it downloads a browser of its own.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null || true
