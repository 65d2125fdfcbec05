"""The algorithm on plain tensors: decision-by-decision fidelity to algorithm.md and its properties."""

import pytest
import torch

from fluxmem import ConfigError, FluxMemConfig, FluxMemory, InputError, compress
from fluxmem.memory import LONG, MID, SHORT, otsu_threshold
from fluxmem.testing import moving_square_frames, square_cells

from reference_fluxmem import otsu as reference_otsu
from reference_fluxmem import reference_compress


def _otsu(values, fallback, valid=None):
    threshold, ok = otsu_threshold(torch.as_tensor(values, dtype=torch.float32), valid, fallback_to_median=fallback)
    return float(threshold) if bool(ok) else None


# ------------------------------------------------------------------------------------ Otsu
def test_otsu_two_clusters_takes_the_first_maximum_bin_centre():
    # bins 6 (0.1 * 64 = 6.4) and 96 (1.5 * 64): every split between them is equally good,
    # the first maximum is bin 6, whose centre is 6.5 / 64.
    assert _otsu([0.1] * 10 + [1.5] * 10, True) == 6.5 / 64
    assert _otsu([0.1] * 10 + [1.5] * 10, False) == 6.5 / 64


def test_otsu_degenerate_inputs():
    assert _otsu([], True) is None
    assert _otsu([], False) is None
    # the threshold is a float32 tensor value: 0.3 rounded to float32, not the Python float
    assert _otsu([0.3] * 7, True) == pytest.approx(0.3)  # zero variance: the median
    assert _otsu([0.3] * 7, False) is None  # one class only: no threshold
    assert _otsu([0.5], True) == 0.5
    # lower median for an even count (values in one bin, so Otsu finds no split)
    assert _otsu([0.400, 0.401, 0.402, 0.403], True) == pytest.approx(0.401)  # float32, as above


def test_otsu_clamps_and_puts_two_in_the_last_bin():
    # -1 clamps to 0 (bin 0), 5 clamps to 2 (bin 127)
    assert _otsu([-1.0, -1.0, 5.0, 5.0], True) == 0.5 / 64
    assert _otsu([2.0, 2.0, 0.0], False) == 0.5 / 64


def test_otsu_mask_selects_values():
    values = torch.tensor([0.1, 0.1, 1.5, 1.5, 9.0, -3.0])
    valid = torch.tensor([True, True, True, True, False, False])
    assert _otsu(values, True, valid) == 6.5 / 64


def test_otsu_bins_bin_edges_exactly_as_histc():
    """Values on every bin edge k/64, one float32 step either side of it, 0 and 2: the batched
    histogram puts each where torch.histc does (the transcription uses histc itself)."""
    edges = torch.arange(129, dtype=torch.float32) / 64
    below, above = torch.nextafter(edges, edges - 1), torch.nextafter(edges, edges + 1)
    for values in (edges, below.clamp(0, 2), above.clamp(0, 2), torch.cat([edges[::7], above[::5]])):
        for count in (3, 17, len(values)):
            picked = values[:count]
            assert _otsu(picked, True) == reference_otsu(picked, True)
            assert _otsu(picked, False) == reference_otsu(picked, False)


@pytest.mark.parametrize("value", [0.0, 2.4e-7, 0.3, 1.0, 1.9, 2.0])
@pytest.mark.parametrize("count", [1, 2, 7, 4096])
def test_otsu_constant_rows_fall_back_to_their_value(value, count):
    """A constant row has variance 0 (a float32 mean of many equal values may round a hair off
    them; the variance stays far below 1e-12): the threshold is the value itself, and without the
    fallback there is none (one class). Rows of a batch are independent."""
    rows = torch.full((3, count), value)
    rows[1] = 0.5 * value
    rows[2, : count // 2 + 1] = 2.0  # not constant unless count is 1
    threshold, ok = otsu_threshold(rows, fallback_to_median=True)
    assert bool(ok.all())
    assert float(threshold[0]) == torch.tensor(value).item() == reference_otsu(rows[0], True)
    assert float(threshold[1]) == reference_otsu(rows[1], True)
    assert float(threshold[2]) == reference_otsu(rows[2], True)
    _, ok = otsu_threshold(rows[:2], fallback_to_median=False)
    assert not bool(ok.any())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fallback", [True, False])
def test_otsu_matches_literal_transcription(seed, fallback):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 300, (1,), generator=g))
    values = torch.cat([torch.rand(n, generator=g) * 0.4, 0.6 + torch.rand(n // 2, generator=g) * 1.6])
    if seed % 3 == 0:
        values = torch.full((n,), 0.25)
    assert _otsu(values, fallback) == reference_otsu(values, fallback)


# ------------------------------------------------------------------ whole algorithm fidelity
def _smooth_video(T, H, W, D, seed, noise=1.2, dtype=torch.float32):
    """Features with temporal and spatial redundancy, so that every branch of TAS and SDC fires."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(H, W, D, generator=g)
    base = base + torch.roll(base, 1, dims=1) * 0.8  # spatial correlation: SDC has clusters
    frames = []
    current = base
    for _ in range(T):
        current = current + noise * torch.randn(H, W, D, generator=g) * (torch.rand(H, W, 1, generator=g) > 0.6)
        # a little noise everywhere: no two tokens are identical, so no decision rests on rounding
        frames.append(current + 0.03 * torch.randn(H, W, D, generator=g))
    return torch.stack(frames).reshape(T * H * W, D).to(dtype)


CASES = [
    dict(short_frames=8, medium_frames=64),
    dict(short_frames=4, medium_frames=8),
    dict(short_frames=2, medium_frames=0),
    dict(short_frames=6, medium_frames=4, direct_drop_sim=None),
    dict(short_frames=4, medium_frames=6, pair_sim_threshold=0.9),
    dict(short_frames=5, medium_frames=9, direct_drop_sim=0.95),  # odd raw counts floor to grid steps
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", [(12, 4, 5, 16), (9, 3, 3, 8), (7, 1, 6, 8)])
def test_compress_matches_literal_transcription(case, shape):
    T, H, W, D = shape
    features = _smooth_video(T, H, W, D, seed=sum(shape) + len(case))
    out = compress(features, (T, H, W), FluxMemConfig(**case))
    keep, merged = reference_compress(features, (T, H, W), **case)
    assert torch.equal(out.keep, keep)
    # the transcription sums each cluster's members one by one, compress with one scatter-add: the same
    # mean summed in another order, so equal up to float rounding only (the keep mask above is exact)
    assert torch.allclose(out.features, merged, rtol=0, atol=1e-6)
    # the input is never written to
    assert torch.equal(features, _smooth_video(T, H, W, D, seed=sum(shape) + len(case)))


def test_compress_exercises_every_decision():
    """The fidelity data above is not trivial: TAS drops and keeps, SDC merges."""
    T, H, W, D = 12, 4, 5, 16
    out = compress(_smooth_video(T, H, W, D, seed=0), (T, H, W), FluxMemConfig(short_frames=4, medium_frames=8))
    long_frames = [f for f in out.frames if f.tier == LONG]
    mid_frames = [f for f in out.frames if f.tier == MID]
    assert long_frames and mid_frames
    assert any(bool(f.tas_dropped.any()) for f in mid_frames + long_frames)
    assert any(bool((~f.tas_dropped).any()) for f in mid_frames + long_frames)
    assert any(bool(f.sdc_dropped.any()) for f in long_frames)
    assert not torch.equal(out.features, _smooth_video(T, H, W, D, seed=0))


# ------------------------------------------------------------------------------ properties
@pytest.mark.parametrize("case", CASES[:3])
def test_incremental_equals_offline_at_every_step(case):
    T, H, W, D = 14, 4, 4, 16
    features = _smooth_video(T, H, W, D, seed=3)
    memory = FluxMemory(FluxMemConfig(**case), (H, W))
    for t in range(1, T + 1):
        memory.push(features[(t - 1) * H * W : t * H * W])
        offline = compress(features[: t * H * W], (t, H, W), FluxMemConfig(**case))
        assert torch.equal(memory.keep_mask(), offline.keep)
        index, kept = memory.kept_features()
        assert torch.equal(index, offline.keep.nonzero().squeeze(1))
        assert torch.equal(kept, offline.features[offline.keep])
        assert [f.tier for f in memory.frames] == [f.tier for f in offline.frames]


def test_causality_decisions_depend_only_on_the_next_short_frames():
    T, H, W, D = 16, 4, 4, 16
    cfg = FluxMemConfig(short_frames=6, medium_frames=8)  # S = 3 grid steps
    S = 3
    features = _smooth_video(T, H, W, D, seed=5)
    base = compress(features, (T, H, W), cfg)
    i = 5
    changed = features.clone()
    changed[(i + S + 1) * H * W :] = torch.randn_like(changed[(i + S + 1) * H * W :])
    other = compress(changed, (T, H, W), cfg)
    cells = H * W
    for j in range(i + 1):
        assert torch.equal(base.keep[j * cells : (j + 1) * cells], other.keep[j * cells : (j + 1) * cells])
        assert torch.equal(base.features[j * cells : (j + 1) * cells], other.features[j * cells : (j + 1) * cells])


def test_each_frame_changes_at_most_twice_and_long_term_is_final():
    T, H, W, D = 20, 4, 4, 16
    features = _smooth_video(T, H, W, D, seed=7)
    memory = FluxMemory(FluxMemConfig(short_frames=4, medium_frames=6), (H, W))
    history: dict[int, list] = {}
    for t in range(T):
        update = memory.push(features[t * H * W : (t + 1) * H * W])
        for j in range(memory.num_frames):
            cells, feats = memory.kept(j)
            snapshot = (cells.tolist(), feats.clone())
            seen = history.setdefault(j, [])
            if not seen or seen[-1][0] != snapshot[0] or not torch.equal(seen[-1][1], snapshot[1]):
                seen.append(snapshot)
        if update.entered_long is not None:
            assert memory.num_final == update.entered_long + 1
    for j, versions in history.items():
        assert len(versions) <= 3  # whole, after TAS, after SDC
    final = memory.num_final
    assert final == T - 2 - 3  # S = 2 short, M = 3 mid


def test_forget_frees_only_final_frames_and_changes_no_later_decision():
    T, H, W, D = 14, 3, 3, 8
    features = _smooth_video(T, H, W, D, seed=11)
    cfg = FluxMemConfig(short_frames=2, medium_frames=2)
    kept_alone = FluxMemory(cfg, (H, W))
    forgetting = FluxMemory(cfg, (H, W))
    for t in range(T):
        frame = features[t * H * W : (t + 1) * H * W]
        kept_alone.push(frame)
        forgetting.push(frame)
        if forgetting.num_final:
            forgetting.forget(0)
    with pytest.raises(InputError, match="long-term"):
        forgetting.forget(forgetting.num_final)
    assert forgetting.kept(0)[0].numel() == 0 and not bool(forgetting.frames[0].keep.any())
    for i in range(1, T):
        assert torch.equal(forgetting.kept(i)[0], kept_alone.kept(i)[0])
        assert torch.equal(forgetting.kept(i)[1], kept_alone.kept(i)[1])


def test_short_frames_covering_the_video_changes_nothing():
    T, H, W, D = 6, 3, 3, 8
    features = _smooth_video(T, H, W, D, seed=1)
    out = compress(features, (T, H, W), FluxMemConfig(short_frames=12))
    assert bool(out.keep.all())
    assert torch.equal(out.features, features)
    assert {f.tier for f in out.frames} == {SHORT}


def test_grid_steps_and_validation():
    assert FluxMemConfig(short_frames=8, medium_frames=64).grid_steps(2) == (4, 32)
    assert FluxMemConfig(short_frames=3, medium_frames=5).grid_steps(2) == (1, 2)
    with pytest.raises(ConfigError, match="less than one temporal grid step"):
        FluxMemConfig(short_frames=1).grid_steps(2)
    with pytest.raises(ConfigError, match=">= 0"):
        FluxMemConfig(medium_frames=-4)
    with pytest.raises(ConfigError, match="integer"):
        FluxMemConfig(short_frames=2.5)
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        FluxMemConfig(direct_drop_sim=3.0)
    with pytest.raises(InputError, match=r"\[T\*H\*W, D\]"):
        compress(torch.zeros(10, 4), (2, 2, 2))
    with pytest.raises(InputError, match="three positive"):
        compress(torch.zeros(8, 4), (2, 0, 4))
    memory = FluxMemory(FluxMemConfig(), (2, 2))
    with pytest.raises(InputError, match="grid step"):
        memory.push(torch.zeros(5, 4))


def test_bfloat16_inputs_decide_in_float32_and_keep_their_dtype():
    T, H, W, D = 10, 3, 4, 16
    features = _smooth_video(T, H, W, D, seed=9).to(torch.bfloat16)
    cfg = FluxMemConfig(short_frames=4, medium_frames=4)
    out = compress(features, (T, H, W), cfg)
    as_float = compress(features.float(), (T, H, W), cfg)
    assert out.features.dtype == torch.bfloat16
    assert torch.equal(out.keep, as_float.keep)
    assert torch.equal(out.features, as_float.features.to(torch.bfloat16))


def _cell_features(frames: torch.Tensor, temporal_patch_size: int = 2) -> torch.Tensor:
    """One feature per 28x28 cell per grid step: the pixels, averaged over the step's frames."""
    T, H, W, _ = frames.shape
    cells = frames.reshape(T, H // 28, 28, W // 28, 28, 3).permute(0, 1, 3, 2, 4, 5).reshape(T, H // 28, W // 28, -1)
    steps = cells.reshape(T // temporal_patch_size, temporal_patch_size, H // 28, W // 28, -1).mean(1)
    return (steps - 96.0).reshape(-1, steps.shape[-1])


def test_moving_square_static_cells_dropped_square_kept():
    """Known answer: a square jumping two cells per frame is new in every neighbourhood and stays;
    the static background is dropped in mid- and long-term."""
    T, height, width = 16, 112, 224
    frames = torch.from_numpy(moving_square_frames(T, height=height, width=width, step=56)).float()
    covered = square_cells(T, height=height, width=width, step=56)
    out = compress(_cell_features(frames), (T // 2, 4, 8), FluxMemConfig(short_frames=4, medium_frames=4))
    tiers = [record.tier for record in out.frames]
    assert tiers == [LONG] * 4 + [MID] * 2 + [SHORT] * 2
    everything = {(h, w) for h in range(4) for w in range(8)}
    for record in out.frames[:6]:
        step = record.index
        kept = {(int(c) // 8, int(c) % 8) for c in record.keep.nonzero().squeeze(1)}
        square_now = covered[2 * step] | covered[2 * step + 1]
        square_around = set().union(*covered[max(0, 2 * step - 2) : 2 * step + 4])
        assert square_now <= kept, f"step {step} ({record.tier}): square cells dropped"
        assert not (kept & (everything - square_around)), f"step {step} ({record.tier}): static cells kept"


def test_gradients_flow_through_kept_and_merged_tokens():
    """Fine-tuning through the memory: decisions are the same with gradients on, and a token merged
    into an anchor still learns through the anchor's mean."""
    torch.manual_seed(0)
    t, h, w, d = 8, 4, 4, 16
    cells = torch.arange(h * w)
    region_of_cell = (cells // w >= h // 2).long() * 2 + (cells % w >= w // 2).long()
    # every frame new (TAS keeps it), each made of four flat regions (SDC merges inside them)
    frames = [torch.randn(4, d)[region_of_cell] + 0.05 * torch.randn(h * w, d) for _ in range(t)]
    features = torch.stack(frames).reshape(t * h * w, d)
    config = FluxMemConfig(short_frames=2, medium_frames=4)
    expected = compress(features, (t, h, w), config)
    assert any(r.anchors is not None and bool(r.sdc_dropped.any()) for r in expected.frames)
    live = features.clone().requires_grad_(True)
    result = compress(live, (t, h, w), config)
    assert torch.equal(result.keep, expected.keep)
    assert torch.equal(result.features.detach(), expected.features)
    result.features[result.keep].sum().backward()
    merged_away = next(r for r in expected.frames if r.sdc_dropped is not None and bool(r.sdc_dropped.any()))
    row = merged_away.index * h * w + int(merged_away.sdc_dropped.nonzero()[0])
    assert bool(live.grad[row].abs().sum() > 0)  # a dropped member still learns through its anchor's mean
