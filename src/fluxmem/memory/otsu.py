"""Otsu's threshold over distances in [0, 2], exactly as ``algorithm.md`` defines it.

Works on a masked vector so that callers never need a host synchronisation to select values:
the result is a pair of 0-d tensors (threshold, has_threshold).
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
    """Return ``(threshold, has_threshold)`` for the ``valid`` entries of ``values``.

    Steps (``algorithm.md``, "Adaptive threshold"): clamp to [0, 2] in float32; with
    ``fallback_to_median``, a variance <= 1e-12 gives the lower median; a 128-bin histogram
    (``torch.histc`` binning, the value 2 in the last bin); between-class variance with the
    degenerate classes set to -1; the first maximum; a non-positive maximum gives the median
    (fallback) or no threshold.
    """
    v = values.reshape(-1).float().clamp(0.0, _RANGE)
    if v.numel() == 0:
        zero = v.new_zeros(())
        return zero, zero.bool()
    if valid is None:
        valid = torch.ones_like(v, dtype=torch.bool)
    else:
        valid = valid.reshape(-1)
    weight = valid.float()
    count = weight.sum()

    bins = (v * (1.0 / _BIN_WIDTH)).floor().long().clamp_(0, OTSU_BINS - 1)
    hist = torch.zeros(OTSU_BINS, dtype=torch.float32, device=v.device).index_add_(0, bins, weight)
    p = hist / count.clamp_min(1.0)
    centres = (torch.arange(OTSU_BINS, dtype=torch.float32, device=v.device) + 0.5) * _BIN_WIDTH
    omega = p.cumsum(0)
    mu = (p * centres).cumsum(0)
    mu_total = mu[-1]
    sigma = (mu_total * omega - mu).square() / (omega * (1.0 - omega)).clamp_min(1e-12)
    degenerate = (omega < 1e-6) | ((1.0 - omega) < 1e-6)
    sigma = torch.where(degenerate, torch.full_like(sigma, -1.0), sigma)
    best = torch.argmax(sigma)  # first maximum
    otsu_ok = sigma[best] > 0
    threshold = (best.float() + 0.5) * _BIN_WIDTH
    nonempty = count > 0

    if not fallback_to_median:
        return threshold, otsu_ok & nonempty

    median = _masked_lower_median(v, valid, count)
    mean = (v * weight).sum() / count.clamp_min(1.0)
    variance = ((v - mean) * weight).square().sum() / count.clamp_min(1.0)
    use_median = (variance <= 1e-12) | ~otsu_ok
    return torch.where(use_median, median, threshold), nonempty


def _masked_lower_median(v: torch.Tensor, valid: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Lower median of ``v[valid]`` (``torch.median``'s convention) without a host sync."""
    ordered = torch.where(valid, v, torch.full_like(v, float("inf"))).sort().values
    rank = ((count.long() - 1).clamp_min(0)) // 2
    return ordered.gather(0, rank.reshape(1)).squeeze(0)
