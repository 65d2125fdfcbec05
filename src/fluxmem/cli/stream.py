"""``fluxmem stream SOURCE --model M --questions FILE.jsonl``: answer questions on a live stream.

SOURCE is a video file, a camera (``/dev/video0`` or an index) or a network URL (RTSP/HTTP),
opened with PyAV. Questions are JSON lines ``{"time": seconds, "question": "..."}``; each is asked
as soon as the stream has passed its time (questions after the end are asked at the end). Answers
are written as JSON lines ``{time, stream_time, question, answer, latency_ms, memory}``, flushed
after each; scene-change events (``--proactive``) as ``{event, time, change_fraction, ...}``.
A source that ends or fails mid-stream ends the run cleanly with what was answered kept. Frames
whose size differs from the first frame's are resized to it (the session itself refuses them).
``--no-fluxmem`` keeps every token (the unpruned baseline; every question then prefills everything).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from ..errors import ConfigError, FluxMemError, InputError
from . import options

logger = logging.getLogger(__name__)
_KEEP_EVERYTHING = 2**40  # raw frames: more than any stream holds


def register(subparsers) -> None:
    parser = subparsers.add_parser("stream", help="answer questions on a live or recorded video stream", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="video file, camera (/dev/video0 or 0) or URL (rtsp://, http://)")
    parser.add_argument("--questions", default=None, help='JSON lines {"time": seconds, "question": "..."}')
    parser.add_argument("--out", default=None, help="write answers here (JSON lines) and show progress; default: standard output")
    parser.add_argument("--no-progress", action="store_true", help="with --out: no progress bar or summary line")
    parser.add_argument("--realtime", action="store_true", help="pace a file at its true speed (default: as fast as possible)")
    parser.add_argument("--proactive", action="store_true", help="emit scene-change events")
    parser.add_argument("--gamma", type=options.fraction, default=0.5, help="scene-change threshold on the changed-token fraction")
    parser.add_argument("--instruction", default=None, help="standing instruction answered at each scene change")
    parser.add_argument("--max-new-tokens", type=options.positive_int, default=128)
    parser.add_argument("--max-memory-tokens", type=options.positive_int, default=None, help="cap on the video's tokens held: visual tokens and per-frame timestamps (oldest long-term dropped)")
    parser.add_argument("--no-cache-reuse", action="store_true", help="prefill everything at each question")
    parser.add_argument("--history", action="store_true", help="keep earlier questions and answers in the prompt")
    options.add_model_options(parser, required=False)
    options.add_memory_options(parser)
    group = parser.add_argument_group("served stream (instead of --model)")
    group.add_argument("--server", default=None, help="URL of a fluxmem serve server: the memory and the model run there")
    group.add_argument("--api-key", default=None, help="the server's API key")
    group = parser.add_argument_group("frame sampling")
    group.add_argument("--fps", type=options.positive_float, default=1.0, help="frames per second to sample (default %(default)s)")
    options.add_pixel_options(group)
    parser.set_defaults(handler=run)


def read_questions(path: str | None) -> list[dict]:
    """Questions sorted by time; a clear error naming the line for anything malformed."""
    if path is None:
        return []
    file = Path(path)
    if file.is_dir():
        raise InputError(f"questions file {path!r} is a directory; pass a JSON-lines file of {{\"time\", \"question\"}}.")
    if not file.exists():
        raise InputError(f"questions file {path!r} does not exist; pass a JSON-lines file of {{\"time\", \"question\"}}.")
    raw = file.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(raw) > 1 and b"\x00" in raw[:4]):
        raise InputError(f"questions file {path!r} is UTF-16 encoded; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8).")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"questions file {path!r} is not UTF-8 text (byte {error.start}); save it as UTF-8.") from None
    questions = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not valid JSON ({error.msg}).") from None
        if not isinstance(item, dict):
            raise InputError(f"{path}:{number}: expected an object {{\"time\": seconds, \"question\": \"...\"}}.")
        moment, question = item.get("time"), item.get("question")
        if isinstance(moment, bool) or not isinstance(moment, (int, float)) or not math.isfinite(moment) or moment < 0:
            raise InputError(f"{path}:{number}: \"time\" must be a finite number of seconds >= 0, got {moment!r}.")
        if not isinstance(question, str):
            raise InputError(f"{path}:{number}: \"question\" must be a string of text, got {type(question).__name__} {question!r}.")
        if not question.strip():
            raise InputError(f"{path}:{number}: the question is empty; give the text to ask.")
        questions.append({"time": float(moment), "question": question})
    if not questions:
        raise InputError(f"questions file {path!r} holds no question; write one JSON object {{\"time\", \"question\"}} per line.")
    questions.sort(key=lambda q: q["time"])  # stable: same-time questions keep their order
    return questions


def claim_out(args: argparse.Namespace):
    """--out checked against every input (the video, the questions, the model) and locked for the
    run, before the model loads; nothing to claim when the answers go to standard output."""
    import contextlib

    from ..loading import local_model_paths
    from ..outputs import claim_output

    if args.out is None:
        return contextlib.nullcontext()
    return claim_output(args.out, flag="--out", kind="file", what="answers", inputs={
        "video": args.source, "questions file": args.questions, "model": local_model_paths(args.model)})


def run(args: argparse.Namespace) -> int:
    questions = read_questions(args.questions)
    if not questions and not args.proactive:
        raise ConfigError("nothing to do: pass --questions FILE.jsonl and/or --proactive.")
    if args.instruction is not None and not args.proactive:
        raise ConfigError("--instruction is answered at scene changes; add --proactive.")
    memory = options.memory_config(args)
    if args.server is None and args.model is None:
        raise ConfigError("pass --model MODEL (or --server URL to use a fluxmem serve server).")
    if args.server is not None and (args.proactive or args.history or args.no_cache_reuse or args.no_fluxmem):
        raise ConfigError("--proactive, --history, --no-cache-reuse and --no-fluxmem are local-session options; drop them with --server.")
    method, budget = options.memory_method(args)
    if budget is not None:
        raise ConfigError("--budget is solved over a whole video, which a live stream never has; cap the tokens held with "
                          "--max-memory-tokens, or pick a method's own setting (e.g. --memory recent:4).")  # fmt: skip
    if method is not None and not method.causal:
        method.stream((1, 1))  # a method that needs the whole video refuses now, before the model loads
    if method is not None and args.no_fluxmem:
        raise ConfigError(f"--no-fluxmem keeps every token; drop it to run --memory {method.spec} (or use --memory none).")
    if args.server is None:
        options.check_model_options(args)
    if args.no_fluxmem:  # baseline: every frame stays short-term, nothing is pruned (nor ever final)
        memory = memory.replace(short_frames=_KEEP_EVERYTHING, medium_frames=0)
    with claim_out(args):  # the output is checked first: a bad --out is named before a bad model
        if args.server is None:
            options.check_model(args)
        return _run(args, memory, questions, method)


def _run(args: argparse.Namespace, memory, questions: list[dict], method) -> int:
    from ..memories import MemoryStats
    from ..outputs import RecordFile
    from ..session import StreamSession
    from ..video import open_source

    out_file = None
    try:
        source = open_source(_camera_index(args.source), realtime=args.realtime)  # unopenable: VideoError now
        with source:
            if args.server is not None:
                session = _served_session(args, memory, method)
            else:
                session = None
                model, processor = options.load(args)
            out_file = RecordFile(args.out, fresh=True) if args.out is not None else None  # whole lines only
            session = session or StreamSession(
                model,
                processor,
                memory,
                fps=args.fps,
                min_pixels=args.min_pixels,
                max_pixels=args.max_pixels,
                reuse_cache=not args.no_cache_reuse,
                max_memory_tokens=args.max_memory_tokens,
                history=args.history,
                proactive=args.proactive,
                gamma=args.gamma,
                instruction=args.instruction,
                instruction_max_new_tokens=args.max_new_tokens,
                memory=method,
            )
            progress = args.out is not None and not args.no_progress
            counts = _stream(source, session, questions, args.max_new_tokens, out_file or sys.stdout, progress=progress)
    finally:
        if out_file is not None:
            out_file.close()
    if progress:
        stats = session.stats()
        memory_stats = stats["memory"]
        print(
            f"[stream] {counts['frames']} frames ({stats['grid_steps']} grid steps) up to {counts['until']:.1f} s, "
            f"{counts['answers']} answers, {counts['events']} events -> {args.out} | "
            + MemoryStats.from_dict(memory_stats).line().removeprefix("[memory] "),
            file=sys.stderr,
        )
    if isinstance(session, _ServedSession):
        session.client.close()
    return 0


class _ServedSession:
    """What ``_stream`` uses of a :class:`StreamSession`, over a stream on a ``fluxmem serve``
    server: frames are sent in chunks, and before every question."""

    def __init__(self, client, fps: float, chunk: int = 8) -> None:
        self.client, self.fps, self.chunk = client, fps, chunk
        self.time = None
        self._frames, self._times = [], []

    def push(self, frame, timestamp: float) -> list:
        self._frames.append(frame)
        self._times.append(timestamp)
        if len(self._frames) >= self.chunk:
            self.flush()
        return []

    def flush(self) -> None:
        if self._frames:
            frames, times, self._frames, self._times = self._frames, self._times, [], []
            self.time = self.client.push(frames, times)["time"]

    def ask(self, question: str, *, max_new_tokens: int):
        import time
        from types import SimpleNamespace

        self.flush()
        started = time.perf_counter()
        answer = self.client.ask(question, max_tokens=max_new_tokens)
        return SimpleNamespace(text=answer["answer"], latency_ms=(time.perf_counter() - started) * 1000, memory=answer["memory"])

    def stats(self) -> dict:
        self.flush()
        return self.client.stats()


def _served_session(args, memory, method) -> _ServedSession:
    from ..serving import StreamClient

    client = StreamClient(args.server, api_key=args.api_key)
    client.open(fps=args.fps, memory=None if method is None else method.spec, memory_options=memory.to_dict(),
                max_memory_tokens=args.max_memory_tokens)  # fmt: skip
    return _ServedSession(client, args.fps)


def _stream(source, session, questions: list[dict], max_new_tokens: int, out, *, progress: bool = False) -> dict:
    from tqdm.auto import tqdm

    pending = list(questions)
    counts = {"answers": 0, "events": 0, "frames": 0}
    first_size, warned, last = None, False, None
    frames = iter(source)
    with tqdm(desc="stream", unit="frame", disable=not progress, leave=False) as bar:
        while True:
            try:
                frame, timestamp = next(frames)
            except StopIteration:
                break
            except FluxMemError as error:  # a source that fails mid-stream ends the run
                logger.warning("the stream ended: %s", error)
                break
            while pending and pending[0]["time"] < timestamp:
                _write(out, _answer(session, pending.pop(0), max_new_tokens))
                counts["answers"] += 1
            if first_size is None:
                first_size = frame.shape[:2]
            elif frame.shape[:2] != first_size:
                if not warned:
                    logger.warning("frame size changed from %s to %s; resizing to the first frame's size", first_size, frame.shape[:2])
                    warned = True
                frame = _resize(frame, first_size)
            try:
                events = session.push(frame, timestamp)
            except InputError as error:
                if last is None:  # later frames are resized to the first one's size: none would be taken
                    raise InputError(f"{source.name}: {error}") from None
                logger.warning("frame at %.3f s skipped: %s", timestamp, error)  # e.g. a timestamp going backwards
                continue
            last = (frame, timestamp)
            counts["frames"] += 1
            bar.update(1)
            bar.set_postfix_str(f"t={timestamp:.1f}s", refresh=False)
            for event in events:
                _write(out, event.to_dict())
                counts["events"] += 1
    counts["until"] = last[1] if last else 0.0
    if last is not None and pending:
        _complete_last_step(session, *last)
    for question in pending:  # asked at the end, on everything the stream showed
        _write(out, _answer(session, question, max_new_tokens, stream_time=last[1] if last else None))
        counts["answers"] += 1
    return counts


def _complete_last_step(session, frame, timestamp: float) -> None:
    """At the end of the stream, repeat the last frame until a sampled frame still waiting for its
    grid-step partner is encoded (as offline sampling pads a video to whole grid steps): a clip
    shorter than one grid step is then seen, not answered with no video at all."""
    step = 1.0 / session.fps
    while session.stats()["frames_pending"]:
        timestamp += step
        session.push(frame, timestamp)


def _answer(session, question: dict, max_new_tokens: int, *, stream_time: float | None = None) -> dict:
    answer = session.ask(question["question"], max_new_tokens=max_new_tokens)
    return {
        "time": question["time"],
        "stream_time": session.time if stream_time is None else stream_time,
        "question": question["question"],
        "answer": answer.text,
        "latency_ms": round(answer.latency_ms, 3),
        "memory": answer.memory,
    }


def _write(out, record: dict) -> None:
    out.write(json.dumps(record) + "\n")  # one whole line (a RecordFile, or standard output)
    out.flush()


def _resize(frame, size):
    import numpy as np
    from PIL import Image

    height, width = size
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def _camera_index(source: str):
    return int(source) if source.isdigit() else source

