"""Everything ``fluxmem visualize`` writes, for one video, in one call."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..outputs import atomic_file, claim_output
from .animation import FORMATS, check_fps, write_animation
from .overlay import draw_step
from .plot import plot_tokens
from .records import MemoryTrace, trace_video
from .sheet import contact_sheet
from .summary import write_summary


def picture_names(animation: str | None = "mp4") -> tuple[str, ...]:
    """The names :func:`write_pictures` writes under its folder (``overlays/`` a sub-folder)."""
    names = ("overlays/", "contact_sheet.png", "tokens.png", "summary.json")
    return names + ((f"memory.{animation}",) if animation else ())


@dataclass
class Visualization:
    """The trace and the paths written (``overlays``, ``contact_sheet``, ``animation``, ``plot``, ``summary``)."""

    trace: MemoryTrace
    files: dict = field(default_factory=dict)
    plot: dict = field(default_factory=dict)


def write_pictures(trace: MemoryTrace, out_dir, *, animation: str | None = "mp4", animation_fps: float = 2.0) -> Visualization:
    """Per-step overlays (``overlays/step_0000.png``, ...), ``contact_sheet.png``, ``memory.mp4``
    or ``.gif`` (``animation=None`` for none), ``tokens.png`` and ``summary.json`` under ``out_dir``."""
    if animation is not None and animation not in FORMATS:
        raise ConfigError(f"animation must be one of {', '.join(FORMATS)} or None, got {animation!r}.")
    out = Path(out_dir)
    overlay_dir = out / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)
    files: dict = {}
    overlays = [draw_step(step) for step in trace.steps]
    paths = []
    for step, image in zip(trace.steps, overlays):
        path = overlay_dir / f"step_{step.index:04d}.png"
        with atomic_file(path) as temporary:
            image.save(temporary, optimize=True)
        paths.append(path)
    files["overlays"] = overlay_dir
    files["contact_sheet"] = out / "contact_sheet.png"
    with atomic_file(files["contact_sheet"]) as temporary:
        contact_sheet(trace).save(temporary, optimize=True)
    if animation is not None:
        files["animation"] = write_animation(overlays, out / f"memory.{animation}", fps=animation_fps)
    files["plot"] = out / "tokens.png"
    _, numbers = plot_tokens(trace, files["plot"])
    files["summary"] = out / "summary.json"
    write_summary(trace, files["summary"], files={k: v.name if k != "overlays" else "overlays/" for k, v in files.items()}, plot=numbers)
    files["overlay_files"] = paths
    return Visualization(trace=trace, files=files, plot=numbers)


def visualize(
    model,
    processor,
    video,
    out_dir,
    *,
    config=None,
    sampling=None,
    display: str = "blend",
    animation: str | None = "mp4",
    animation_fps: float = 2.0,
    progress: bool = False,
) -> Visualization:
    """:func:`trace_video` then :func:`write_pictures`: every picture of one video under ``out_dir``
    (checked against the video and locked first: :func:`fluxmem.outputs.claim_output`)."""
    if animation is not None:
        check_fps(animation_fps)  # before the model runs
    video_path = video if isinstance(video, (str, Path)) else None
    with claim_output(out_dir, flag="out_dir", kind="dir", what="pictures", writes=picture_names(animation), inputs={"video": video_path}):
        trace = trace_video(model, processor, video, config=config, sampling=sampling, display=display, progress=progress)
        return write_pictures(trace, out_dir, animation=animation, animation_fps=animation_fps)
