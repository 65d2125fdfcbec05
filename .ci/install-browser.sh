#!/usr/bin/env bash
# What tests/test_demo.py needs for its real-browser test: Debian's chromium (driven through
# playwright's Python package with executable_path=/usr/bin/chromium) and the demo's gradio.
# Never `playwright install`: it downloads a browser build of its own, which fails here.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
PYTHON="${PYTHON:-python}"
"$PYTHON" -m pip install -q "playwright>=1.40" "gradio>=5"
/usr/bin/chromium --version 2>/dev/null || true
