"""Every Python snippet of the README and docs/*.md runs as written.

Only what a reader is told to replace is replaced: the model id (by the tiny offline model), video
paths and stream URLs (by a real clip), the attention implementation where the one named is not
installed here, and names the text leaves to the reader (``features``, ``want_to_ask``, ...) are
defined. The snippets of one file run top to bottom in one namespace, as a reader would run them.
A documented line that fails fails this test.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
MODEL_IDS = ("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct")
VIDEO_PLACEHOLDERS = ("PATH_TO_YOUR_VIDEO", "rtsp://camera/live", "clip.mp4", "video.mp4")


def snippets(path: Path) -> list[str]:
    return FENCE.findall(path.read_text(encoding="utf-8"))


def test_the_documents_hold_python_snippets():
    found = {path.name: len(snippets(path)) for path in DOCS}
    assert found["README.md"] >= 3 and found["streaming.md"] >= 1 and found["visualization.md"] >= 1, found


def _as_written(code: str, model_dir: Path, clip: Path) -> str:
    for model_id in MODEL_IDS:
        code = code.replace(f'"{model_id}"', repr(str(model_dir)))
    for placeholder in VIDEO_PLACEHOLDERS:
        code = code.replace(f'"{placeholder}"', repr(str(clip)))
    if importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available():
        code = code.replace('attn_implementation="flash_attention_2"', 'attn_implementation="sdpa"')
    return code


class _EveryNth:
    """``if want_to_ask:`` - the reader's decision when to ask: true every ``n``-th time it is read."""

    def __init__(self, n: int) -> None:
        self.n, self.reads = n, 0

    def __bool__(self) -> bool:
        self.reads += 1
        return self.reads % self.n == 0


def _reader_names() -> dict:
    """Names the text leaves to the reader (a feature tensor and its grid, when to ask)."""
    grid = (4, 3, 4)
    return {
        "T": grid[0], "H": grid[1], "W": grid[2],
        "features": torch.randn(grid[0] * grid[1] * grid[2], 32, generator=torch.Generator().manual_seed(0)),
        "want_to_ask": _EveryNth(10),
    }


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    from fluxmem.testing import moving_square_frames, write_video

    # 12 s: at the snippets' 1 fps, more frames than short_frames=8, so the memory prunes something
    frames = moving_square_frames(24, height=112, width=112, step=28)
    return write_video(tmp_path_factory.mktemp("docs") / "clip.mp4", frames, fps=2.0)


@pytest.mark.parametrize("doc", [path for path in DOCS if snippets(path)], ids=lambda path: path.name)
def test_every_snippet_runs_as_written(doc, tiny_model_dir, short_clip, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative outputs ("pictures/") land here
    module = types.ModuleType(f"doc_{doc.stem}")  # a script's module exists: dataclasses look classes up there
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    namespace.update(_reader_names())
    for number, code in enumerate(snippets(doc)):
        source = _as_written(code, tiny_model_dir, short_clip)
        try:
            exec(compile(source, f"{doc.name} snippet {number}", "exec"), namespace)  # noqa: S102 - our own docs
        except ModuleNotFoundError as error:
            top = (error.name or "").split(".")[0]
            if top and top != "fluxmem" and importlib.util.find_spec(top) is None:
                pytest.skip(f"{doc.name} snippet {number} needs {top}, which is not installed here (an optional extra)")
            pytest.fail(f"{doc.name} snippet {number} failed: {type(error).__name__}: {error}\n{code}")
        except Exception as error:  # name the snippet in the failure
            pytest.fail(f"{doc.name} snippet {number} failed: {type(error).__name__}: {error}\n{code}")
    printed = capsys.readouterr().out
    if doc.name == "README.md":
        # the enable snippet prints the memory summary of a pruned call, not an empty one
        summaries = [ast.literal_eval(line) for line in printed.splitlines() if line.startswith("{") and "'videos'" in line]
        assert summaries, f"the README printed no memory summary:\n{printed[-2000:]}"
        assert any(s["videos"] >= 1 and 0 < s["kept"] < s["tokens"] for s in summaries), (
            f"the README's summary shows no pruned video: {summaries}"
        )
    if doc.name == "visualization.md":
        assert (tmp_path / "pictures" / "summary.json").is_file()
