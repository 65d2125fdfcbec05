"""``fluxmem visualize VIDEO --model M --out DIR``: pictures of what the memory keeps.

Writes, under DIR: ``overlays/step_NNNN.png`` (every temporal grid step with the cells TAS dropped
darkened and hatched, SDC clusters outlined with their anchor marked, the tier in a banner),
``contact_sheet.png`` (all steps and a legend), ``memory.mp4`` (or ``.gif``) of the overlays,
``tokens.png`` (tokens kept per step by tier over time, retained fraction in the title) and
``summary.json`` (the numbers).

With --memory a,b,c (memory methods, see fluxmem memories) and optionally --budget: the video is
encoded once and every method runs on the same features; writes ``methods.png`` (one column per
method, one row per grid step, the same frames in every column: what each method keeps) and
``methods.json`` (the numbers) instead.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from . import options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "visualize",
        help="draw which tokens the memory keeps, drops and merges in a video",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("video", help="path to a video file")
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    options.add_model_options(parser)
    options.add_memory_options(parser, several=True)
    options.add_sampling_options(parser)
    group = parser.add_argument_group("pictures")
    group.add_argument("--animation", choices=("mp4", "gif", "none"), default="mp4", help="overlay animation format (default %(default)s)")
    group.add_argument("--animation-fps", type=options.positive_float, default=2.0, help="overlays per second in the animation (default %(default)s)")
    group.add_argument(
        "--display",
        choices=("blend", "first", "last"),
        default="blend",
        help="picture of a grid step: the average of its raw frames, or its first or last frame (default %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..video import probe_video
    from ..viz import visualize

    if args.no_fluxmem:
        raise ConfigError("visualize shows what FluxMem keeps and drops; run it without --no-fluxmem.")
    from ..viz.animation import check_fps

    check_fps(args.animation_fps, "--animation-fps")
    config = options.memory_config(args)
    sampling = options.sampling_options(args)
    options.check_model_options(args)
    animation = None if args.animation == "none" else args.animation
    with claim_out_dir(args, animation):
        options.check_model(args)
        if args.memory is not None or args.budget is not None:
            return _methods(args, config, sampling)
        probe_video(args.video)  # a missing or broken video fails here, before the model loads
        model, processor = options.load(args)
        result = visualize(
            model,
            processor,
            args.video,
            args.out,
            config=config,
            sampling=sampling,
            display=args.display,
            animation=animation,
            animation_fps=args.animation_fps,
            progress=not args.no_progress,
        )
    trace = result.trace
    print(
        f"[memory] {len(trace.steps)} grid steps, visual tokens {trace.tokens} -> {trace.kept_tokens} "
        f"({100 * trace.retained_fraction:.1f}% kept) | "
        + " ".join(f"{tier} {entry['kept']}/{entry['tokens']}" for tier, entry in trace.tier_counts().items() if entry["frames"])
    )
    for key in ("contact_sheet", "animation", "plot", "summary"):
        if key in result.files:
            print(f"{key.replace('_', ' ')}: {result.files[key]}")
    print(f"overlays: {result.files['overlays']}/ ({len(result.files['overlay_files'])} images)")
    return 0


def claim_out_dir(args: argparse.Namespace, animation: str | None):
    """--out must be a folder (created now if missing) that holds no input where a picture goes,
    checked and locked before any decoding or encoding."""
    from ..loading import local_model_paths
    from ..outputs import claim_output
    from ..viz import picture_names

    methods = args.memory is not None or args.budget is not None  # --memory a,b,c: the side-by-side picture
    writes = ("methods.png", "methods.json") if methods else picture_names(animation)
    return claim_output(args.out, flag="--out", kind="dir", what="pictures", writes=writes,
                        inputs={"video": args.video, "model": local_model_paths(args.model)})


def _methods(args: argparse.Namespace, config, sampling) -> int:
    """--memory a,b,c: every method's kept tokens side by side on the same frames."""
    import json
    from pathlib import Path

    from ..eval.runner import budget_with_fluxmem_options, split_methods, with_fluxmem_options
    from ..outputs import atomic_file, write_text
    from ..video import probe_video
    from ..viz.methods import methods_sheet, methods_summary, trace_methods

    specs = split_methods(args.memory or "fluxmem")
    options.check_fluxmem_flags_used(args, specs)
    methods = [with_fluxmem_options(spec, config) for spec in specs]
    budget = None if args.budget is None else budget_with_fluxmem_options(args.budget, config)
    probe_video(args.video)
    # the model plain: every method runs on the encoded features here, none through the model
    model, processor = options.load(argparse.Namespace(**{**vars(args), "memory": None, "budget": None}))
    traces = trace_methods(model, processor, args.video, methods, budget=budget, sampling=sampling,
                           display=args.display, progress=not args.no_progress)
    out = Path(args.out)
    picture, numbers = out / "methods.png", out / "methods.json"
    with atomic_file(picture) as temporary:
        methods_sheet(traces).save(temporary, optimize=True)
    write_text(numbers, json.dumps(methods_summary(traces), indent=2) + "\n")
    for trace in traces:
        print(trace.result.stats().line())
    print(f"methods side by side: {picture}")
    print(f"numbers: {numbers}")
    return 0
