"""Token-drop pictures: what FluxMem kept, dropped (TAS) and merged (SDC) in every grid step.

* :func:`trace_video` — the records for notebooks: per grid step, the frame as the model saw it and
  the memory's masks (:class:`MemoryTrace`, :class:`StepView`).
* :func:`draw_step`, :func:`contact_sheet`, :func:`plot_tokens`, :func:`write_animation`,
  :func:`write_summary` — one picture or file each.
* :func:`visualize` — all of them for one video (what ``fluxmem visualize`` runs).

Needs matplotlib (``pip install 'fluxmem-video[viz]'``) for fonts and the plot.
"""

from .animation import write_animation
from .overlay import draw_step, legend
from .plot import plot_tokens
from .records import MemoryTrace, StepView, step_image, trace_from_records, trace_video
from .report import Visualization, picture_names, visualize, write_pictures
from .sheet import contact_sheet
from .summary import write_summary

__all__ = [
    "MemoryTrace",
    "StepView",
    "Visualization",
    "contact_sheet",
    "draw_step",
    "legend",
    "picture_names",
    "plot_tokens",
    "step_image",
    "trace_from_records",
    "trace_video",
    "visualize",
    "write_animation",
    "write_pictures",
    "write_summary",
]
