"""Start-up time of the command line and of ``import fluxmem``, each in a fresh process.

Prints the median wall time of ``fluxmem --help``, ``fluxmem ask --help`` (the goal: under 1.5 s)
and ``python -c "import fluxmem"``, and which heavy modules each loaded (none may: torch,
transformers, the trainer, peft, Gradio and lmms-eval load only when a command runs).

    python benchmarks/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "fluxmem.train.trainer", "peft", "gradio", "lmms_eval", "datasets")
PROBE = "import sys\n{body}\nprint('LOADED', [m for m in {heavy!r} if m in sys.modules], file=sys.stderr)"


def measure(body: str, repeat: int) -> tuple[float, list[str]]:
    code = PROBE.format(body=body, heavy=HEAVY)
    times, loaded = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        loaded = eval(run.stderr.strip().splitlines()[-1].removeprefix("LOADED "))  # noqa: S307 - our own output
    return statistics.median(times), loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = {
        "fluxmem --help": "from fluxmem.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "fluxmem ask --help": "from fluxmem.cli import main\ntry:\n    main(['ask', '--help'])\nexcept SystemExit:\n    pass",
        "import fluxmem": "import fluxmem",
    }
    print(f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}, median of {args.repeat}")
    for name, body in cases.items():
        seconds, loaded = measure(body, args.repeat)
        print(f"{name:<22} {seconds:6.3f} s   heavy modules loaded: {', '.join(loaded) or 'none'}")


if __name__ == "__main__":
    main()
