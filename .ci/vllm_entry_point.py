"""Make vLLM find fluxmem's plugin in the test venv, whatever the installed metadata says.

When the project's metadata already declares the ``vllm.general_plugins`` entry point ``fluxmem``,
this does nothing; otherwise it writes a minimal distribution that declares it.
"""

import sysconfig
from importlib.metadata import entry_points
from pathlib import Path

declared = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "fluxmem"]
if declared:
    print(f"vllm.general_plugins: fluxmem declared by {declared[0].dist.name if declared[0].dist else 'an installed package'}")
else:
    info = Path(sysconfig.get_paths()["purelib"]) / "fluxmem_vllm_plugin-0.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fluxmem-vllm-plugin\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("[vllm.general_plugins]\nfluxmem = fluxmem.serving:register\n")
    print(f"vllm.general_plugins: fluxmem declared by {info.name} (the package metadata lacks it)")
