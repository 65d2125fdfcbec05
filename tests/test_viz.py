"""``fluxmem visualize`` and ``fluxmem.viz`` on a synthetic clip with a known answer.

The clip: a static textured background and a red square that holds still for one temporal grid
step (2 raw frames) and then jumps two cells to the right, out of the 3x3 neighbourhood FluxMem
compares against. With the random tiny model, same pixels give the same features, so TAS must
keep the square's cell and drop the static background in every mid- and long-term step.
"""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

from fluxmem.inference import SamplingOptions
from fluxmem.memory import FluxMemConfig

pytest.importorskip("matplotlib")

STEPS = 8
HEIGHT, WIDTH = 112, 448  # 4 x 16 merged cells of 28 px
SQUARE_ROW = 1
CONFIG = FluxMemConfig(short_frames=4, medium_frames=4)  # 2 short steps, 2 mid, the rest long
SAMPLING = SamplingOptions(fps=2.0, max_pixels=HEIGHT * WIDTH)
CLI_MEMORY = ["--short-frames", "4", "--medium-frames", "4", "--fps", "2", "--max-pixels", str(HEIGHT * WIDTH)]


def square_column(step: int) -> int:
    return 2 * step


def raw_frames() -> np.ndarray:
    from fluxmem.testing import moving_square_frames

    frames = np.repeat(moving_square_frames(STEPS, height=HEIGHT, width=WIDTH, step=56), 2, axis=0)
    for step in range(STEPS):  # the clip is what this test thinks it is
        red = (frames[2 * step, ..., 0] == 255) & (frames[2 * step, ..., 1] == 40)
        ys, xs = np.nonzero(red)
        assert {(y // 28, x // 28) for y, x in zip(ys, xs)} == {(SQUARE_ROW, square_column(step))}
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from fluxmem.testing import write_video

    # lossless H.264: a static background decodes to identical pixels in every frame
    return write_video(tmp_path_factory.mktemp("viz-clip") / "square.mp4", raw_frames(), fps=2.0, codec="libx264")


def run_cli(monkeypatch, argv: list[str]) -> int:
    import fluxmem.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", ("visualize",))  # only this command, whatever else is being built
    return cli.main(argv)


@pytest.fixture(scope="module")
def visualized(tiny_model_dir, clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("viz-out")
    with pytest.MonkeyPatch.context() as monkeypatch:
        code = run_cli(
            monkeypatch,
            ["visualize", str(clip), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress", *CLI_MEMORY],
        )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def model_and_processor(tiny_model_dir):
    from fluxmem.loading import load_model

    return load_model(tiny_model_dir, device="cpu", fluxmem=CONFIG)


@pytest.fixture(scope="module")
def trace(model_and_processor, clip):
    from fluxmem.viz import trace_video

    model, processor = model_and_processor
    return trace_video(model, processor, str(clip), config=CONFIG, sampling=SAMPLING)


# --------------------------------------------------------------------------------- the command
def test_visualize_command_writes_every_file(visualized):
    overlays = sorted((visualized / "overlays").glob("*.png"))
    assert [p.name for p in overlays] == [f"step_{i:04d}.png" for i in range(STEPS)]
    for name in ("contact_sheet.png", "tokens.png"):
        with Image.open(visualized / name) as image:
            assert image.format == "PNG" and image.width >= 640
    with av.open(str(visualized / "memory.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with Image.open(overlays[0]) as first:
        assert len(frames) == STEPS
        assert frames[0].shape[1] >= first.width and frames[0].shape[0] >= first.height
    summary = json.loads((visualized / "summary.json").read_text())
    assert summary["grid_thw"] == [STEPS, 4, 16]
    assert [step["tier"] for step in summary["steps"]] == ["long"] * 4 + ["mid"] * 2 + ["short"] * 2
    assert summary["files"]["animation"] == "memory.mp4"


def test_gif_animation_and_bad_options(tiny_model_dir, clip, tmp_path, monkeypatch, capsys):
    out = tmp_path / "gif"
    argv = ["visualize", str(clip), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress", "--animation", "gif"]
    assert run_cli(monkeypatch, argv + CLI_MEMORY) == 0
    with Image.open(out / "memory.gif") as gif:
        assert gif.n_frames == STEPS
    assert not (out / "memory.mp4").exists()

    assert run_cli(monkeypatch, ["visualize", str(tmp_path / "missing.mp4"), "--model", str(tiny_model_dir), "--out", str(out)]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    assert run_cli(monkeypatch, argv + ["--no-fluxmem"]) == 2
    assert "--no-fluxmem" in capsys.readouterr().err
    assert run_cli(monkeypatch, argv + ["--animation-fps", "0"]) == 2
    assert "--animation-fps" in capsys.readouterr().err
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("hello")
    assert run_cli(monkeypatch, ["visualize", str(not_a_video), "--model", str(tiny_model_dir), "--out", str(out)]) == 2
    assert "notes.mp4" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- numbers
def test_summary_and_plot_equal_the_memorys_own_statistics(visualized, model_and_processor, clip):
    """summary.json and the plotted bars equal (1) what the switch reports for a question about the
    same clip and (2) compress() run here on the same features."""
    from fluxmem import get_state
    from fluxmem.adapters import registry
    from fluxmem.inference import answer, build_inputs, build_messages, encode_videos
    from fluxmem.memory import compress

    model, processor = model_and_processor
    summary = json.loads((visualized / "summary.json").read_text())

    answer(model, processor, str(clip), "What moves?", sampling=SAMPLING, max_new_tokens=1)
    reported = get_state(model).summary()
    assert reported["videos"] == 1
    assert (summary["tokens"], summary["kept"]) == (reported["tokens"], reported["kept"])
    assert summary["retained_fraction"] == reported["retained_fraction"]
    assert {tier: entry for tier, entry in summary["tiers"].items() if entry["frames"]} == reported["tiers"]

    inputs = build_inputs(processor, build_messages(str(clip), "What moves?", SAMPLING))
    features = encode_videos(model, inputs)["video"].pooler_output[0]
    adapter = registry.adapter_for(model)
    grid = adapter.merged_grid(inputs["video_grid_thw"][0].tolist())
    result = compress(features, grid, CONFIG, temporal_patch_size=adapter.temporal_patch_size)
    per_step = result.keep.reshape(grid[0], -1).sum(-1).tolist()
    assert summary["plot"]["kept"] == per_step
    assert summary["plot"]["tier"] == [record.tier for record in result.frames]
    assert summary["plot"]["time_s"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # 2 raw frames at 2 fps per step
    assert summary["plot"]["tokens_per_step"] == grid[1] * grid[2]
    assert [step["kept"] for step in summary["steps"]] == per_step
    assert summary["tiers"] == result.tier_counts()
    assert summary["kept"] == result.kept_tokens
    assert summary["plot"]["retained_fraction"] == result.retained_fraction


def test_plot_bars_are_the_trace_counts(trace):
    from fluxmem.viz import plot_tokens

    figure, numbers = plot_tokens(trace)
    assert numbers["kept"] == [step.kept_tokens for step in trace.steps]
    assert numbers["tier"] == [step.tier for step in trace.steps]
    assert f"kept {trace.kept_tokens} of {trace.tokens}" in numbers["title"]
    assert f"{100 * trace.retained_fraction:.1f}%" in numbers["title"]
    legend_texts = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    counts = trace.tier_counts()
    assert legend_texts == [
        f"{name}: {counts[tier]['frames']} steps, {counts[tier]['kept']}/{counts[tier]['tokens']} kept"
        for tier, name in (("short", "short-term (whole)"), ("mid", "mid-term (after TAS)"), ("long", "long-term (after TAS + SDC)"))
    ]


# ----------------------------------------------------------------------------- what is marked
def _far_from_square(step: int) -> np.ndarray:
    """Cells more than one cell away from the square in this step and its neighbours in time."""
    near = np.zeros((4, 16), dtype=bool)
    for other in (step - 1, step, step + 1):
        if 0 <= other < STEPS:
            col = square_column(other)
            near[max(0, SQUARE_ROW - 1) : SQUARE_ROW + 2, max(0, col - 1) : col + 2] = True
    return ~near


def test_records_keep_the_square_and_drop_the_static_background(trace):
    assert [step.tier for step in trace.steps] == ["long"] * 4 + ["mid"] * 2 + ["short"] * 2
    assert trace.cell_size == (28, 28)
    for step in trace.steps:
        square = (SQUARE_ROW, square_column(step.index))
        if step.tier == "short":
            assert step.keep.all() and not step.tas_dropped.any()
            continue
        assert step.keep[square], f"step {step.index}: the square's cell was dropped"
        far = _far_from_square(step.index)
        assert step.tas_dropped[far].all(), f"step {step.index}: static background kept at {np.argwhere(far & ~step.tas_dropped)}"
        assert step.keep.sum() <= 3
    # the displayed picture is the frame the model saw: the square is red in its cell
    picture = trace.steps[3].image
    # a decoded H.264 frame: the codec's lossy colour, so within a few levels of the drawn colour
    assert tuple(picture[28 + 14, 6 * 28 + 14]) == pytest.approx((255, 40, 40), abs=12)


def _luminance(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_overlay_pixels_show_kept_square_and_dimmed_background(visualized, trace):
    for step in trace.steps:
        with Image.open(visualized / "overlays" / f"step_{step.index:04d}.png") as image:
            overlay = np.asarray(image.convert("RGB"))
        scale = overlay.shape[1] // WIDTH
        assert overlay.shape[1] == WIDTH * scale and scale >= 1
        banner = overlay.shape[0] - HEIGHT * scale
        assert banner > 0
        body = overlay[banner:]
        source = np.repeat(np.repeat(step.image, scale, axis=0), scale, axis=1)
        cell = 28 * scale

        def region(array, row, col):
            return array[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]

        # kept cells are left exactly as the model saw them; the square shows red
        for row, col in np.argwhere(step.keep):
            assert np.array_equal(region(body, row, col), region(source, row, col))
        if step.tier == "short":
            assert np.array_equal(body, source)
            continue
        square = region(body, SQUARE_ROW, square_column(step.index))
        assert np.abs(square.reshape(-1, 3).mean(0) - (255, 40, 40)).max() < 12
        # dropped background: much darker than the source, and hatched (a brightness pattern)
        for row, col in np.argwhere(_far_from_square(step.index)):
            dimmed, original = region(body, row, col), region(source, row, col)
            hatch = np.all(dimmed == 200, axis=-1)
            assert 0.05 < hatch.mean() < 0.5
            assert _luminance(dimmed[~hatch]).mean() < 0.35 * _luminance(original[~hatch]).mean() + 1
        # the banner names the tier by brightness: black for long-term, grey for mid-term
        banner_grey = np.median(_luminance(overlay[:banner].reshape(-1, 3)))
        assert banner_grey < 40 if step.tier == "long" else 120 < banner_grey < 180


def test_sdc_clusters_are_outlined_with_their_anchor_marked():
    """A hand-made long-term step: cells 1 and 2 of row 0 merged (anchor 1), cell 5 TAS-dropped."""
    from fluxmem.viz import StepView, draw_step

    image = np.full((56, 84, 3), 120, dtype=np.uint8)  # 2 x 3 cells of 28 px
    keep = np.ones((2, 3), dtype=bool)
    keep[0, 2] = keep[1, 2] = False
    tas = np.zeros((2, 3), dtype=bool)
    tas[1, 2] = True
    merged = np.full((2, 3), -1, dtype=np.int64)
    merged[0, 1] = merged[0, 2] = 1
    step = StepView(4, "long", 8.0, 8.5, image, keep, tas, merged)
    assert step.clusters() == {1: [1, 2]}
    assert step.anchors[0, 1] and step.sdc_dropped[0, 2] and not step.sdc_dropped[0, 1]

    picture = np.asarray(draw_step(step, width=84 * 4, banner=False))  # 112 px cells
    lum = _luminance(picture)  # weighted RGB sums rounded to whole levels: within a level or two
    assert lum[170, 56] == pytest.approx(120, abs=1)  # untouched kept cell (row 1, col 0)
    assert lum[56, 56] == pytest.approx(120, abs=1)  # kept cell outside the cluster
    assert lum[56, 112 + 56] > 250  # anchor disc: white at the anchor's centre
    assert lum[30, 224 + 56] == pytest.approx(0.65 * 120, abs=2)  # merged member darkened to 65 %
    # the cluster's left side: kept grey, a black edge, the white line centred on the boundary, black, grey
    profile = lum[56, 80:145]
    runs = [int(value) for i, value in enumerate(np.rint(profile)) if i == 0 or value != np.rint(profile[i - 1])]
    assert runs == [120, 0, 255, 0, 120]
    assert lum[56, 112] > 250
    assert lum[112 + 30, 224 + 30] < 0.35 * 120 + 1 or lum[112 + 30, 224 + 30] == 200  # TAS cell: dark or hatch


def test_trace_rejects_frames_that_do_not_match_the_records():
    from fluxmem.errors import InputError
    from fluxmem.memory import compress
    from fluxmem.viz import trace_from_records

    result = compress(torch.randn(2 * 4, 8), (2, 2, 2), FluxMemConfig(short_frames=2, medium_frames=0))
    good = np.zeros((4, 56, 56, 3), dtype=np.uint8)
    trace = trace_from_records(result.frames, good, (2, 2), config=FluxMemConfig(short_frames=2, medium_frames=0), sample_fps=2.0)
    assert [step.start_s for step in trace.steps] == [0.0, 1.0]
    assert trace.tier_counts() == result.tier_counts()
    with pytest.raises(InputError, match="need 4 frames"):
        trace_from_records(result.frames, good[:3], (2, 2), config=CONFIG)
    with pytest.raises(InputError, match="do not divide"):
        trace_from_records(result.frames, np.zeros((4, 51, 56, 3), np.uint8), (2, 2), config=CONFIG)
