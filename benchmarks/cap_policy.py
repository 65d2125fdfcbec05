"""How often the cap's two policies give different answers on a long stream.

``cap_policy="cut"`` removes evicted frames from the key/value cache in place: the surviving
frames keep the keys/values they were given while the evicted frames were still there.
``cap_policy="prefill"`` computes the remaining prefix again, so its answers equal a full prefill
of the kept tokens (what ``fluxmem serve``'s streams answer). Both sessions see the same frames
(a moving square on a random tiny model) and are asked the same
question every ``--every`` seconds of stream time; the script prints the fraction of answers
(greedy, ``--tokens`` tokens) and of first tokens that differ once the cap has evicted.

    python benchmarks/cap_policy.py                      # 10-minute stream at 1 fps, a question every 20 s
    python benchmarks/cap_policy.py --minutes 2 --every 10   # quick
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from fluxmem.session import StreamSession  # noqa: E402
from fluxmem.testing import build_tiny_qwen2_5_vl, moving_square_frames  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--every", type=float, default=20.0, help="stream seconds between questions")
    parser.add_argument("--cap", type=int, default=128, help="max_memory_tokens of both sessions")
    parser.add_argument("--tokens", type=int, default=8, help="answer length (greedy)")
    args = parser.parse_args()

    model, processor = build_tiny_qwen2_5_vl()
    memory = {"short_frames": 4, "medium_frames": 8}
    sessions = {policy: StreamSession(model, processor, fps=args.fps, max_memory_tokens=args.cap,
                                      cap_policy=policy, **memory)
                for policy in ("cut", "prefill")}  # fmt: skip
    count = int(args.minutes * 60 * args.fps)
    frames = moving_square_frames(count, square=56)
    asked = differ = first_differ = 0
    next_question = args.every
    started = time.perf_counter()
    for i, frame in enumerate(frames):
        t = i / args.fps
        for session in sessions.values():
            session.push(frame, t)
        if t + 1e-9 < next_question:
            continue
        next_question += args.every
        if not sessions["cut"].stats()["memory"]["evicted_frames"]:
            continue
        cut, prefill = (sessions[p].ask("What is moving in the video?", max_new_tokens=args.tokens) for p in ("cut", "prefill"))
        asked += 1
        differ += cut.token_ids != prefill.token_ids
        first_differ += cut.token_ids[:1] != prefill.token_ids[:1]
    stats = sessions["cut"].stats()
    print(f"stream: {args.minutes:g} min at {args.fps:g} fps, cap {args.cap} tokens, {stats['memory']['evicted_frames']} grid steps "
          f"evicted in {stats['cache']['cuts']} cuts; {asked} questions after the first eviction "
          f"({time.perf_counter() - started:.0f} s)")
    if asked:
        print(f"answers that differ (cut vs prefill): {differ}/{asked} = {differ / asked:.1%}; "
              f"first token differs: {first_differ}/{asked} = {first_differ / asked:.1%}")


if __name__ == "__main__":
    main()
