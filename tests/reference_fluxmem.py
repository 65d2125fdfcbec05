"""A literal, slow transcription of ``algorithm.md`` used only to check the real implementation.

Written for clarity, not speed: Python loops over tokens, ``torch.histc`` for the histogram,
normalised vectors for cosines (exact near 1, as the spec says), union-find for components. No code is shared with
``fluxmem.memory``.
"""

from __future__ import annotations

import torch


def otsu(values: torch.Tensor, fallback_to_median: bool):
    """Returns a float threshold or None."""
    if values.numel() == 0:
        return None
    v = values.float().clamp(0, 2)
    if fallback_to_median and v.var(unbiased=False).item() <= 1e-12:
        return v.median().item()
    hist = torch.histc(v, bins=128, min=0, max=2)
    p = hist / hist.sum()
    w = 2 / 128
    centres = (torch.arange(128, dtype=torch.float32) + 0.5) * w
    omega = torch.cumsum(p, 0)
    mu = torch.cumsum(p * centres, 0)
    mu_t = mu[-1]
    sigma = (mu_t * omega - mu) ** 2 / torch.clamp(omega * (1 - omega), min=1e-12)
    sigma[(omega < 1e-6) | (1 - omega < 1e-6)] = -1
    k = int(torch.argmax(sigma))
    if sigma[k] <= 0:
        return v.median().item() if fallback_to_median else None
    return (k + 0.5) * w


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / torch.clamp(x.norm(dim=-1, keepdim=True), min=1e-8)


EXACT_BAND = 2.0 ** -12


def _f32(value):
    """A Python float rounded to float32: every quantity of algorithm.md is a float32."""
    return float(torch.tensor(value, dtype=torch.float32))


def _cosine(unit_a, unit_b, raw_a, raw_b):
    """The float32 dot product of the normalised tokens; within EXACT_BAND of 1, the exact cosine
    (float64 sums of the raw float32 features) rounded to float32."""
    s = float((unit_a * unit_b).sum())
    if s >= 1 - EXACT_BAND:
        a, b = raw_a.double(), raw_b.double()
        exact = float((a * b).sum()) / (max(float(a.norm()), 1e-8) * max(float(b.norm()), 1e-8))
        s = _f32(exact)
    return s


def _neighbour_sim(unit, x, i, j, h, w, H, W):
    """max cosine between token (h, w) of frame i and frame j's tokens in the 3x3 window."""
    best = None
    for dh in (-1, 0, 1):
        for dw in (-1, 0, 1):
            hh, ww = h + dh, w + dw
            if 0 <= hh < H and 0 <= ww < W:
                s = _cosine(unit[i, h, w], unit[j, hh, ww], x[i, h, w].float(), x[j, hh, ww].float())
                best = s if best is None else max(best, s)
    return best


def reference_compress(features, grid_thw, short_frames=8, medium_frames=64, direct_drop_sim=0.8,
                       pair_sim_threshold=None, temporal_patch_size=2):
    """Returns (keep bool [T*H*W], merged features [T*H*W, D])."""
    T, H, W = grid_thw
    S = short_frames // temporal_patch_size
    M = medium_frames // temporal_patch_size
    assert S >= 1
    x = features.reshape(T, H, W, -1)
    unit = _unit(x)
    keep = torch.ones(T, H, W, dtype=torch.bool)
    merged = features.clone().reshape(T, H, W, -1)
    d_prev = {}
    fixed = None if pair_sim_threshold is None else _f32(min(max(1 - pair_sim_threshold, 0.0), 2.0))

    def tas(e):
        nxt = e + 1
        d_next, sims = {}, {}
        for h in range(H):
            for w in range(W):
                s = _neighbour_sim(unit, x, e, nxt, h, w, H, W)
                sims[(h, w)] = s
                d_next[(h, w)] = _f32(1 - s)
        vals = torch.tensor(list(d_next.values()), dtype=torch.float32)
        theta_next = fixed if fixed is not None else otsu(vals, True)
        defined = {c: d for c, d in d_prev.get(e, {}).items() if d >= 0}
        theta_prev = None
        if defined:
            theta_prev = fixed if fixed is not None else otsu(
                torch.tensor(list(defined.values()), dtype=torch.float32), True)
        for (h, w), d in d_next.items():
            k = d >= theta_next
            if theta_prev is not None and (h, w) in defined and defined[(h, w)] >= theta_prev:
                k = True
            if direct_drop_sim is not None and sims[(h, w)] > _f32(direct_drop_sim):
                k = False
            keep[e, h, w] = k

    def sdc(m):
        nodes = [(h, w) for h in range(H) for w in range(W) if keep[m, h, w]]
        if len(nodes) <= 1:
            return
        index = {c: i for i, c in enumerate(nodes)}
        edges = []
        for i, (h, w) in enumerate(nodes):
            for dh in (-1, 0, 1):
                for dw in (-1, 0, 1):
                    j = index.get((h + dh, w + dw))
                    if j is not None and j > i:
                        dist = _f32(1 - _cosine(unit[m, h, w], unit[m, h + dh, w + dw], x[m, h, w].float(), x[m, h + dh, w + dw].float()))
                        edges.append((i, j, min(max(dist, 0.0), 2.0)))
        if not edges:
            return
        theta = otsu(torch.tensor([e[2] for e in edges], dtype=torch.float32), False)
        if theta is None:
            return
        kept_edges = [(i, j) for i, j, d in edges if d <= theta]
        if not kept_edges:
            return
        parent = list(range(len(nodes)))

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for i, j in kept_edges:
            parent[find(i)] = find(j)
        clusters = {}
        for i in range(len(nodes)):
            clusters.setdefault(find(i), []).append(i)
        for members in clusters.values():
            if len(members) < 2:
                continue
            vecs = torch.stack([x[m, nodes[i][0], nodes[i][1]].float() for i in members])
            mu = vecs.mean(0)
            d2 = ((vecs - mu) ** 2).sum(-1)
            best = min(range(len(members)), key=lambda k: (float(d2[k]), members[k]))
            anchor = members[best]
            for i in members:
                h, w = nodes[i]
                if i == anchor:
                    merged[m, h, w] = mu.to(features.dtype)
                else:
                    keep[m, h, w] = False

    short, mid = [], []
    for i in range(T):
        short.append(i)
        if i > 0:
            d_prev[i] = {(h, w): _f32(1 - _neighbour_sim(unit, x, i, i - 1, h, w, H, W))
                         for h in range(H) for w in range(W)}
        if len(short) > S:
            e = short.pop(0)
            tas(e)
            mid.append(e)
            if len(mid) > M:
                sdc(mid.pop(0))
    return keep.reshape(-1), merged.reshape(T * H * W, -1)
