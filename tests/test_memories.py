"""The memory-method seam on plain tensors: registry, methods, token budget, statistics, streaming."""

import pytest
import torch

import fluxmem.memories as memories
from fluxmem import ConfigError, FluxMemConfig, InputError, compress
from fluxmem.memories import Budget, MemoryStats

GRID = (12, 3, 4)


def _features(grid=GRID, seed=0, dim=16):
    t, h, w = grid
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(h * w, dim, generator=g)
    drift = torch.randn(t, h * w, dim, generator=g) * torch.linspace(0.1, 1.5, t).view(t, 1, 1)
    return (base + drift).reshape(t * h * w, dim)  # frames drift apart at different speeds


def _same_result(a, b):
    assert torch.equal(a.keep, b.keep)
    assert torch.equal(a.anchor_index, b.anchor_index)
    assert torch.equal(a.anchor_means, b.anchor_means)
    assert [r.tier for r in a.frames] == [r.tier for r in b.frames]


# --------------------------------------------------------------------------- registry
def test_registry_lists_every_method_with_one_line():
    assert memories.names()[0] == "fluxmem"
    expected = {"fluxmem", "fluxmem-no-tas", "fluxmem-no-sdc", "fluxmem-fixed", "recent", "uniform", "random", "evs", "vidcom2", "none"}
    assert set(memories.names()) == expected
    for name, line in memories.describe():
        assert line and "\n" not in line, name


@pytest.mark.parametrize("spec, options", [
    ("recent:4", {"frames": 4}), ("uniform:3", {"stride": 3}), ("evs:0.6", {"rate": 0.6}),
    ("random:rate=0.3,seed=2", {"rate": 0.3, "seed": 2}), ("fluxmem:short_frames=4", {"short_frames": 4}),
    ("fluxmem-fixed:0.7", {"pair_sim_threshold": 0.7}), ("fluxmem:pair_sim_threshold=none", {}),
])  # fmt: skip
def test_spec_strings_round_trip(spec, options):
    method = memories.get(spec)
    for key, value in options.items():
        assert getattr(method, key) == value
    assert memories.get(method.spec) == method
    assert memories.get(spec.split(":")[0], **options) == method


@pytest.mark.parametrize("spec, words", [
    ("nope", "unknown memory method 'nope'"), ("evs:1.0", "[0, 1)"), ("evs:speed=2", "no option speed"),
    ("recent:0", "positive number of raw frames"), ("none:3", "takes no value"), ("fluxmem:short_frames=-1", ">= 0"),
    ("fluxmem-fixed:none", "needs a similarity threshold"),
])  # fmt: skip
def test_bad_specs_fail_with_one_line(spec, words):
    with pytest.raises(ConfigError, match=None) as error:
        memories.get(spec)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_get_default_is_fluxmem_and_takes_instances():
    assert memories.get() == memories.get("fluxmem")
    evs = memories.get("evs", rate=0.25)
    assert memories.get(evs) is evs and memories.get(evs, rate=0.5).rate == 0.5


def test_bad_input_shapes_fail_clearly():
    with pytest.raises(InputError, match=r"\[T\*H\*W, D\] = \[48, D\]"):
        memories.get("evs").compress(torch.zeros(47, 4), (4, 3, 4))
    with pytest.raises(InputError, match="three positive sizes"):
        memories.get("evs").compress(torch.zeros(0, 4), (0, 3, 4))
    with pytest.raises(ConfigError, match="multiple of 2"):
        memories.get("recent:3").compress(_features(), GRID)


# ----------------------------------------------------------------------- FluxMem family
@pytest.mark.parametrize("seed", range(3))
def test_fluxmem_is_the_memory_packages_compress(seed):
    features = _features(seed=seed)
    config = FluxMemConfig(short_frames=4, medium_frames=8)
    ours = memories.get("fluxmem", short_frames=4, medium_frames=8).compress(features, GRID)
    _same_result(ours, compress(features, GRID, config))
    assert ours.anchor_index.numel() > 0  # long-term frames merged something: the merge path is covered
    assert ours.method == "fluxmem:short_frames=4,medium_frames=8" and ours.tiered


def test_fluxmem_without_sdc_keeps_what_tas_keeps():
    features = _features()
    ablated = memories.get("fluxmem-no-sdc", short_frames=4, medium_frames=8).compress(features, GRID)
    tas_only = compress(features, GRID, FluxMemConfig(short_frames=4, medium_frames=10**6))
    _same_result(ablated, tas_only)
    assert ablated.anchor_index.numel() == 0


def test_fluxmem_fixed_threshold_is_pair_sim_threshold():
    features = _features()
    ablated = memories.get("fluxmem-fixed:0.5", short_frames=4, medium_frames=8).compress(features, GRID)
    _same_result(ablated, compress(features, GRID, FluxMemConfig(short_frames=4, medium_frames=8, pair_sim_threshold=0.5)))


def test_fluxmem_without_tas_keeps_mid_term_whole_and_merges_long_term():
    t, h, w = GRID
    features = _features()
    full = memories.get("fluxmem", short_frames=4, medium_frames=8).compress(features, GRID)
    ablated = memories.get("fluxmem-no-tas", short_frames=4, medium_frames=8).compress(features, GRID)
    keep = ablated.keep.view(t, h * w)
    # S = 2 short-term and M = 4 mid-term steps stay whole; the first 6 steps are long-term
    assert bool(keep[6:].all())
    assert [r.tier for r in ablated.frames] == ["long"] * 6 + ["mid"] * 4 + ["short"] * 2
    assert int(keep[:6].sum()) < 6 * h * w and ablated.anchor_index.numel() > 0
    assert not torch.equal(keep, full.keep.view(t, h * w))
    # the anchors carry their cluster's mean of the original features
    for anchor in ablated.anchor_index.tolist():
        frame, cell = divmod(anchor, h * w)
        members = (ablated.frames[frame].merged_into == cell).nonzero().squeeze(1) + frame * h * w
        total = torch.zeros(features.shape[1])
        for row in members.tolist():  # summed in row order, as algorithm.md's float32 mean
            total += features[row]
        assert torch.equal(ablated.kept_features()[int(ablated.keep[:anchor].sum())], total / members.numel())


def test_fluxmem_without_tas_on_a_static_video_merges_each_long_term_frame_to_two_tokens():
    t, h, w = GRID
    left, right = torch.eye(16)[0], torch.eye(16)[1]  # two orthogonal halves: one cluster each
    frame = torch.stack([left if col < w // 2 else right for row in range(h) for col in range(w)])
    features = frame.repeat(t, 1).contiguous()
    ablated = memories.get("fluxmem-no-tas", short_frames=4, medium_frames=8).compress(features, GRID)
    assert ablated.keep.view(t, h * w).sum(1).tolist() == [2] * 6 + [h * w] * 6
    # FluxMem's TAS drops the repeated frames before SDC sees them
    assert memories.get("fluxmem", short_frames=4, medium_frames=8).compress(features, GRID).kept_tokens < ablated.kept_tokens


# ------------------------------------------------------------------- the other methods
def test_whole_frame_methods_known_masks():
    t, h, w = GRID
    features = _features()
    frames = lambda spec: memories.get(spec).compress(features, GRID).keep.view(t, h * w).all(1).tolist()  # noqa: E731
    assert frames("recent:4") == [False] * 10 + [True] * 2  # 4 raw frames = 2 grid steps of 2
    assert frames("recent:100") == [True] * t
    assert frames("uniform:5") == [i % 5 == 0 for i in range(t)]
    assert frames("none") == [True] * t
    for spec in ("recent:4", "uniform:5", "none"):  # whole steps only
        keep = memories.get(spec).compress(features, GRID).keep.view(t, h * w)
        assert torch.equal(keep.all(1), keep.any(1))


def test_random_is_seeded_and_exact():
    features = _features()
    a = memories.get("random:rate=0.75,seed=3").compress(features, GRID).keep
    assert torch.equal(a, memories.get("random:rate=0.75,seed=3").compress(features, GRID).keep)
    assert int(a.sum()) == int(features.shape[0] * 0.25)
    assert not torch.equal(a, memories.get("random:rate=0.75,seed=4").compress(features, GRID).keep)


def test_evs_known_answer():
    t, h, w = 3, 2, 2
    base = torch.eye(4, 8)  # four orthogonal cells
    video = base.repeat(t, 1).clone()
    video[4 + 1] = torch.eye(8)[5]  # frame 1 cell 1 changes completely (1 - cos = 1)
    video[8 + 2] = -base[2]  # frame 2 cell 2 flips (1 - cos = 2)
    keep = memories.get("evs:0.5").compress(video, (t, h, w)).keep
    # first frame whole (4 tokens), then the two changed tokens: 6 = int(12 * 0.5)
    assert keep.nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 5, 10]
    # at a high rate the first frame still stays whole
    assert memories.get("evs:0.9").compress(video, (t, h, w)).keep.nonzero().squeeze(1).tolist() == [0, 1, 2, 3]


def test_vidcom2_keeps_exactly_its_count_and_prefers_distinct_tokens():
    features = _features()
    t, h, w = GRID
    for rate in (0.0, 0.3, 0.5, 0.9, 0.99):
        keep = memories.get("vidcom2", rate=rate).compress(features, GRID).keep
        assert int(keep.sum()) == max(t, int(t * h * w * (1 - rate)))
    video = torch.randn(1, 16).repeat(t * h * w, 1) + 0.01 * torch.randn(t * h * w, 16)
    video[7] = torch.randn(16) * 5  # one outlier token
    assert bool(memories.get("vidcom2:0.9").compress(video, GRID).keep[7])


# ------------------------------------------------------------------------------- budget
def test_budget_parsing():
    assert Budget.parse("match:fluxmem") == Budget("match", "fluxmem")
    assert Budget.parse("0.35") == Budget("fraction", 0.35) == Budget.parse(0.35)
    assert Budget.parse("1200") == Budget("count", 1200) == Budget.parse(1200)
    assert str(Budget.parse("match:recent:4")) == "match:recent:4"
    for bad, words in [("0", ">= 1"), ("1.5", "(0, 1]"), ("lots", "count (1200)"), ("match:", "needs a method"),
                       ("match:nope", "unknown memory method"), (True, "count (1200)")]:  # fmt: skip
        with pytest.raises(ConfigError) as error:
            Budget.parse(bad)
        assert words in str(error.value)


@pytest.mark.parametrize("grid", [(12, 3, 4), (9, 5, 5), (20, 2, 3)])
@pytest.mark.parametrize("spec", ["evs", "vidcom2", "random"])
def test_match_fluxmem_keeps_exactly_fluxmems_count(grid, spec):
    features = _features(grid, seed=sum(grid))
    fluxmem_kept = memories.get("fluxmem").compress(features, grid).kept_tokens
    result = memories.get(spec).compress(features, grid, budget="match:fluxmem")
    assert result.target == fluxmem_kept
    assert result.kept_tokens == fluxmem_kept, result.method
    assert result.stats().budget == "match:fluxmem"


@pytest.mark.parametrize("budget", [0.35, 0.9, 7, 100, 1.0])
def test_rate_methods_hit_a_count_or_fraction_exactly(budget):
    features = _features()
    total = features.shape[0]
    target = int(total * budget) if isinstance(budget, float) else budget
    for spec in ("evs", "vidcom2", "random"):
        result = memories.get(spec).compress(features, GRID, budget=budget)
        floor = GRID[1] * GRID[2] if spec == "evs" else (GRID[0] if spec == "vidcom2" else 1)
        assert result.kept_tokens == max(target, floor), (spec, result.method)


def test_frame_methods_reach_the_nearest_count_and_report_it():
    features = _features()  # 12 steps of 12 tokens
    recent = memories.get("recent").compress(features, GRID, budget=50)
    assert (recent.method, recent.kept_tokens, recent.target) == ("recent:8", 48, 50)
    uniform = memories.get("uniform").compress(features, GRID, budget=0.5)
    assert (uniform.method, uniform.kept_tokens, uniform.target) == ("uniform:2", 72, 72)
    # methods without a knob keep what they decide; the statistics carry both figures
    stats = memories.get("none").compress(features, GRID, budget=10).stats()
    assert (stats.kept, stats.target, stats.budget) == (144, 10, "10")


# ----------------------------------------------------------------------------- stats
def test_memory_stats_of_nothing_kept_everything():
    assert MemoryStats().retained_fraction == 1.0
    assert MemoryStats.combine([]).retained_fraction == 1.0
    assert MemoryStats(method=None).line() == "[memory] off"


def test_memory_stats_combine_and_print():
    features = _features()
    a = memories.get("fluxmem", short_frames=4, medium_frames=8).compress(features, GRID).stats()
    b = memories.get("fluxmem", short_frames=4, medium_frames=8).compress(features[: 6 * 12], (6, 3, 4)).stats()
    both = MemoryStats.combine([a, b], grid="x")
    assert (both.videos, both.tokens, both.kept) == (2, 144 + 72, a.kept + b.kept)
    assert both.tiers["short"]["frames"] == 4 and both.to_dict()["grid"] == "x"
    line = both.line()
    assert line.startswith(f"[memory] fluxmem:short_frames=4,medium_frames=8: visual tokens 216 -> {both.kept} (")
    assert "short 48/48" in line
    assert memories.get("evs").compress(features, GRID).stats().tiers is None


# ---------------------------------------------------------------------------- streaming
CAUSAL = [name for name, cls in memories.METHODS.items() if cls.causal]
WHOLE_VIDEO = [name for name, cls in memories.METHODS.items() if not cls.causal]


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_methods_stream_exactly_as_offline(name):
    t, h, w = GRID
    options = {"short_frames": 4, "medium_frames": 8} if name.startswith("fluxmem") else {}
    method = memories.get(name, **options)
    features = _features()
    stream = method.stream((h, w), temporal_patch_size=2)
    finals = {}
    for step in range(t):
        stream.push(features[step * h * w : (step + 1) * h * w])
        offline = method.compress(features[: (step + 1) * h * w], (step + 1, h, w))
        assert torch.equal(stream.keep_mask(), offline.keep), (name, step)
        for index in range(stream.num_frames):
            cells, kept = stream.kept(index)
            rows = offline.keep.view(-1, h * w)[index]
            assert torch.equal(cells, rows.nonzero().squeeze(1))
            start = int(offline.keep[: index * h * w].sum())
            assert torch.equal(kept, offline.kept_features()[start : start + cells.numel()])
        for index in range(stream.num_final):  # final steps never change again
            finals.setdefault(index, stream.keep_mask()[index * h * w : (index + 1) * h * w].clone())
            assert torch.equal(finals[index], stream.keep_mask()[index * h * w : (index + 1) * h * w])


@pytest.mark.parametrize("name", WHOLE_VIDEO)
def test_whole_video_methods_refuse_to_stream_in_one_line(name):
    with pytest.raises(ConfigError) as error:
        memories.get(name).stream((3, 4))
    assert "cannot run in a streaming session" in str(error.value) and "\n" not in str(error.value)


def test_the_memories_command_lists_every_method_with_its_line(capsys):
    from fluxmem.cli import main

    assert main(["memories"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == memories.names()
    assert all(summary in line for line, (_, summary) in zip(lines, memories.describe()))
