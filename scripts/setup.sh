#!/usr/bin/env bash
# Sets up fluxmem from this checkout in .venv: torch first (the one the Python already has when it
# fits; else the CPU build on a machine without an NVIDIA GPU, the default build on one with), then
# fluxmem itself, built as a wheel and installed with the extras asked for. Re-running it updates
# the installed fluxmem from the checkout and changes nothing else.
#
#   bash scripts/setup.sh                  # the library and the `fluxmem` command
#   bash scripts/setup.sh dev              # + everything the tests drive
#   bash scripts/setup.sh viz,demo,train   # any extras (README: "Installing")
#
# PYTHON=python3.12 picks the interpreter (default python3); FLUXMEM_VENV=path another venv.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=${1:-}
python=${PYTHON:-python3}
venv=${FLUXMEM_VENV:-.venv}
cpu_index=https://download.pytorch.org/whl/cpu

say() { echo "setup: $*"; }
fail() { echo "setup: error: $*" >&2; exit 2; }

command -v "$python" >/dev/null || fail "no $python on PATH; install Python >= 3.10 or pass PYTHON=/path/to/python3."
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "fluxmem needs Python >= 3.10; $python is $("$python" -V 2>&1). Pass PYTHON=/path/to/python3.10-or-newer."

# A torch the interpreter already has is used when it fits (torch >= 2.4 with its torchvision). A venv
# lends .venv only what its base interpreter has, so that is where to look.
torch_fits='import torch, torchvision; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); assert v >= (2, 4)'
base=$("$python" -c 'import os, sys; print(os.path.join(sys.base_prefix, "bin", "python3"))')
[ -x "$base" ] || base=$python

if [ ! -x "$venv/bin/python" ]; then
    if "$base" -c "$torch_fits" 2>/dev/null; then
        say "creating $venv on $("$base" -V 2>&1), using its torch $("$base" -c 'import torch; print(torch.__version__)')"
        "$base" -m venv --system-site-packages "$venv"
    else
        say "creating $venv on $("$python" -V 2>&1)"
        "$python" -m venv "$venv"
    fi
fi
py="$venv/bin/python"
pip() { "$py" -m pip install --quiet "$@"; }

if ! "$py" -c "$torch_fits" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        say "installing torch and torchvision (NVIDIA GPU found: the default CUDA build, about 4 GB)"
        pip torch torchvision
    elif "$py" -c "import urllib.request; urllib.request.urlopen('$cpu_index/', timeout=15)" >/dev/null 2>&1; then
        say "installing torch and torchvision (no NVIDIA GPU: the CPU build from $cpu_index, about 1 GB)"
        pip torch torchvision --index-url "$cpu_index"
    else
        say "no NVIDIA GPU, but $cpu_index is unreachable: installing torch from the default index instead (on Linux its CUDA build, about 3 GB more)"
        pip torch torchvision
    fi
fi

target=.
[ -n "$extras" ] && target=".[$extras]"
say "installing fluxmem from this checkout as a wheel${extras:+ with the extras [$extras]}"
pip "$target"
say "ready: $("$py" -c 'import fluxmem, torch; print(f"fluxmem {fluxmem.__version__}, torch {torch.__version__}")') in $venv"
