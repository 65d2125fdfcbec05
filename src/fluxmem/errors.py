"""One exception family, so callers (and the CLI) can tell user errors from bugs.

Every message names the problem and the fix; the CLI prints it on one line without a traceback.
"""


class FluxMemError(ValueError):
    """Base class of every error fluxmem raises on purpose."""


class ConfigError(FluxMemError):
    """A memory, sampling or command-line parameter makes no sense."""


class VideoError(FluxMemError):
    """A video is missing, unreadable, empty, or not a video."""


class UnsupportedModelError(FluxMemError):
    """The model family has no fluxmem adapter."""


class InputError(FluxMemError):
    """Model inputs that cannot be processed (shapes, missing grids, bad questions)."""


class UnsupportedTransformersError(UnsupportedModelError):
    """The installed transformers does not behave as fluxmem relies on (outside the tested range,
    or a signature, attribute or probe that fails); the message names the version, the tested range
    and every mismatch."""


class OutputError(FluxMemError):
    """An output path that would destroy an input, cannot be written, or is being written by
    another run."""
