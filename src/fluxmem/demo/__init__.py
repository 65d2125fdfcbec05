"""The FluxMem web demo (``fluxmem demo``): a Gradio page on the streaming session.

:func:`build_demo` makes the page, :func:`serve` launches it; :class:`TabSession` is one tab's
state (no Gradio inside, so its behaviour is testable directly). Needs ``pip install 'fluxmem-video[demo]'``.
"""

from .tab import Reply, TabSession


def build_demo(*args, **kwargs):
    from .app import build_demo as _build

    return _build(*args, **kwargs)


def serve(*args, **kwargs):
    from .app import serve as _serve

    return _serve(*args, **kwargs)


__all__ = ["Reply", "TabSession", "build_demo", "serve"]
