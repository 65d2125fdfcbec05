"""The one rule for the pixel values of a frame given in memory (an array or a tensor).

* ``uint8``: RGB 0..255, taken as is.
* floating point: RGB 0..1 (the convention of torchvision and of images normalised for a model),
  scaled by 255 and rounded. A float frame with a value outside 0..1 (a frame of 0..255 floats, or
  already normalised with a mean and std) is refused: reading it either way would guess.
* any other integer type (``int64`` arrays built from Python lists, ``uint16`` camera frames):
  accepted when every value lies in 0..255 (nothing is lost), refused otherwise, never clipped.
* ``bool`` and complex frames are refused.

``fluxmem ask`` / :func:`fluxmem.inference.answer`, frame-list videos, in-memory sources and the
streaming session's ``push`` all read frames through :func:`uint8_pixels`, so a frame means the
same thing on every path.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError


def uint8_pixels(values, what: str = "a frame"):
    """``values`` (a numpy array or a torch tensor of any shape) as uint8 0..255, the same type
    back; an :class:`InputError` naming ``what``, the problem and the fix otherwise."""
    if isinstance(values, np.ndarray):
        if values.dtype == np.uint8:
            return values
        if values.dtype.kind not in "biufc":
            raise InputError(f"{what} has {values.dtype} values; pass uint8 RGB pixels (0..255) or floats in 0..1.")
        return uint8_pixels(torch.from_numpy(np.ascontiguousarray(values)), what).numpy()
    if not isinstance(values, torch.Tensor):
        raise InputError(f"{what} must be a numpy array or a tensor of RGB pixels, got {type(values).__name__}.")
    if values.dtype == torch.uint8:
        return values
    if values.dtype == torch.bool or values.is_complex():
        raise InputError(f"{what} has {values.dtype} pixels; pass uint8 RGB (0..255) or floats in 0..1.")
    if values.numel() == 0:
        return values.to(torch.uint8)
    if values.is_floating_point():
        if not bool(torch.isfinite(values).all()):
            raise InputError(f"{what} holds NaN or infinite values; pass uint8 RGB (0..255) or floats in 0..1.")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise InputError(
                f"{what} holds float pixels from {low:g} to {high:g}; float frames are read as RGB 0..1. "
                "Pass uint8 pixels (0..255), e.g. frame.round().clip(0, 255).astype('uint8'), or divide by 255."
            )
        return (values.double() * 255.0).round().to(torch.uint8)
    dtype = str(values.dtype).removeprefix("torch.")
    values = values.to(torch.int64)  # every integer type, uint16 included, compares as int64
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 255:
        raise InputError(
            f"{what} holds {dtype} pixels from {low} to {high}; pass 8-bit RGB "
            "(uint8, 0..255), e.g. (frame >> 8).astype('uint8') for 16-bit pixels."
        )
    return values.to(torch.uint8)
