"""Names a user copies: every install line names the distribution ``fluxmem-video`` (``fluxmem`` on
the public index is another project), in the documents and in every message the package prints."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# `fluxmem[extra]` as a name to install; `config.fluxmem["key"]` (an attribute indexed) is not one
WRONG = re.compile(r"(?<![\w.-])fluxmem\[[a-z,\s]+\]")


def _texts():
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "src").rglob("*.py")]
    return {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8") for path in files}


def test_no_install_line_names_another_project():
    wrong = {name: WRONG.findall(text) for name, text in _texts().items() if WRONG.search(text)}
    assert not wrong, f"say fluxmem-video[...] (the distribution), not fluxmem[...]: {wrong}"


def test_the_pattern_finds_the_wrong_form_only():
    assert WRONG.findall("""pip install 'fluxmem[demo]' or "fluxmem[viz, train]" or `fluxmem[vllm]`""") == [
        "fluxmem[demo]", "fluxmem[viz, train]", "fluxmem[vllm]"]
    assert not WRONG.search("""pip install 'fluxmem-video[demo]'; model.config.fluxmem["short_frames"]""")
