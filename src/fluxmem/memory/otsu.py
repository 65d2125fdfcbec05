"""Otsu's threshold over distances in [0, 2], exactly as ``algorithm.md`` defines it.

Works on masked rows so that callers never need a host synchronisation to select values, and on
any number of rows at once (one threshold per frame in one pass): the result is a pair of tensors
(threshold, has_threshold) shaped like the leading dimensions of the input. A 1-D input is one row
and goes through the very same code.
"""

from __future__ import annotations

import torch

OTSU_BINS = 128
_RANGE = 2.0
_BIN_WIDTH = _RANGE / OTSU_BINS  # 1/64: a power of two, so v / w == v * 64 exactly in float32


def otsu_threshold(
    values: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    fallback_to_median: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(threshold, has_threshold)`` for the ``valid`` entries of each row of ``values``.

    ``values``: ``[..., N]`` (rows along the last dimension); ``valid``: bool of the same shape or
    ``None`` (all valid). Results have shape ``values.shape[:-1]`` (0-d for a 1-D input).

    Steps (``algorithm.md``, "Adaptive threshold"): clamp to [0, 2] in float32; with
    ``fallback_to_median``, a variance <= 1e-12 gives the lower median; a 128-bin histogram
    (``torch.histc`` binning, the value 2 in the last bin); between-class variance with the
    degenerate classes set to -1; the first maximum; a non-positive maximum gives the median
    (fallback) or no threshold.
    """
    lead = values.shape[:-1]
    if values.shape[-1] == 0:
        zero = torch.zeros(lead, dtype=torch.float32, device=values.device)
        return zero, zero.bool()
    v = values.float().clamp(0.0, _RANGE).reshape(-1, values.shape[-1])
    rows = v.shape[0]
    weight = v.new_ones(()).expand_as(v) if valid is None else valid.reshape(v.shape).float()
    count = weight.sum(-1)  # [rows]
    clamped_count = count.clamp_min(1.0)

    bins = (v * (1.0 / _BIN_WIDTH)).floor().long().clamp_(0, OTSU_BINS - 1)
    hist = torch.zeros(rows, OTSU_BINS, dtype=torch.float32, device=v.device).scatter_add_(1, bins, weight.contiguous())
    p = hist / clamped_count.unsqueeze(1)
    centres = (torch.arange(OTSU_BINS, dtype=torch.float32, device=v.device) + 0.5) * _BIN_WIDTH
    omega = p.cumsum(-1)
    mu = (p * centres).cumsum(-1)
    mu_total = mu[:, -1:]
    sigma = (mu_total * omega - mu).square() / (omega * (1.0 - omega)).clamp_min(1e-12)
    degenerate = (omega < 1e-6) | ((1.0 - omega) < 1e-6)
    sigma = sigma.masked_fill(degenerate, -1.0)
    best = torch.argmax(sigma, dim=-1, keepdim=True)  # first maximum
    otsu_ok = sigma.gather(1, best).squeeze(1) > 0
    threshold = (best.squeeze(1).float() + 0.5) * _BIN_WIDTH
    nonempty = count > 0

    if not fallback_to_median:
        return threshold.reshape(lead), (otsu_ok & nonempty).reshape(lead)

    median = _masked_lower_median(v, weight, count)
    mean = (v * weight).sum(-1, keepdim=True) / clamped_count.unsqueeze(1)
    variance = ((v - mean) * weight).square().sum(-1) / clamped_count
    use_median = (variance <= 1e-12) | ~otsu_ok
    return torch.where(use_median, median, threshold).reshape(lead), nonempty.reshape(lead)


def _masked_lower_median(v: torch.Tensor, weight: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Per row, the lower median of the valid values (``torch.median``'s convention), no host sync."""
    ordered = v.masked_fill(weight == 0, float("inf")).sort(dim=-1).values
    rank = ((count.long() - 1).clamp_min(0)) // 2
    return ordered.gather(1, rank.unsqueeze(1)).squeeze(1)
