"""The streaming session on Qwen3-VL (per-frame timestamp blocks, deepstack features) and Qwen3.5
(recurrent linear-attention state): greedy answers equal offline ``generate(use_fluxmem=True)`` on
the same frames at several moments, with and without cache reuse, and each family-specific piece
is checked on its own (blocks and deepstack rows against the switch's pruned prefill, the recurrent
state restored exactly, the memory cap, the per-frame pixel budget, the layout guard)."""

from __future__ import annotations

import pytest
import torch

from fluxmem.adapters import install, registry
from fluxmem.adapters.pruning import prune_prefill
from fluxmem.errors import UnsupportedModelError
from fluxmem.session import StreamSession
from fluxmem.testing import moving_square_frames
from fluxmem.testing_families import build_tiny

MEMORY = {"short_frames": 4, "medium_frames": 8}  # S = 2 grid steps, M = 4 grid steps
QUESTION = "What is moving in the video?"
_MODELS: dict = {}


def tiny(family):
    """One tiny model per family for the whole module (with the switch attached)."""
    if family not in _MODELS:
        model, processor = build_tiny(family)
        install(model, default_active=True)
        _MODELS[family] = (model, processor)
    return _MODELS[family]


@pytest.fixture(scope="module")
def frames():
    return moving_square_frames(24, square=56)


def offline_tokens(model, session, max_new_tokens=6):
    inputs = session.offline_inputs(QUESTION)
    with torch.inference_mode():
        out = model.generate(**inputs, **session.offline_generate_options(), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def linear_states(cache):
    """Copies of every recurrent and conv state of a hybrid cache."""
    return [
        t.clone()
        for layer in cache.layers
        for states in (getattr(layer, "conv_states", None), getattr(layer, "recurrent_states", None))
        for t in (states or {}).values()
        if t is not None
    ]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"])
def test_session_equals_offline_generation_at_several_moments(family, frames):
    model, processor = tiny(family)
    session = StreamSession(model, processor, keep_frames=True, fps=2.0, **MEMORY)
    moments = []
    for i, frame in enumerate(frames):
        final_before = session.memory.num_final if session.memory is not None else 0
        session.push(frame, i / 2.0)
        just_long = session.memory is not None and session.memory.num_final > final_before == 0
        if i in (1, 9, 23) or just_long:  # first grid step, mid-term, right after the first long-term frame, end
            reused = session.ask(QUESTION, max_new_tokens=6)
            full = session.ask(QUESTION, max_new_tokens=6, reuse_cache=False)
            assert reused.token_ids == full.token_ids == offline_tokens(model, session), (family, i)
            moments.append((i, session.memory.num_final))
    assert len(moments) == 4 and moments[-1][1] >= 4, moments  # long-term frames came from the cache
    assert session.stats()["cache"]["frames"] == session.memory.num_final


def test_qwen3_vl_blocks_and_deepstack_rows_equal_the_switch_pruned_prefill(frames):
    """Without cache reuse the session prefills exactly the offline pruned sequence: timestamp text,
    vision start/end and kept tokens at the stock positions, and the deepstack rows of the kept
    tokens with the long-term merges applied."""
    model, processor = tiny("qwen3_vl")
    session = StreamSession(model, processor, keep_frames=True, fps=2.0, **MEMORY)
    for i, frame in enumerate(frames[:20]):
        session.push(frame, i / 2.0)
    assert any(r.merged_into is not None and bool((r.merged_into >= 0).any()) for r in session.memory.frames)
    inputs = session.offline_inputs(QUESTION)
    adapter = registry.adapter_for(model)
    with torch.inference_mode():
        prepared = adapter.prepare(**inputs)
        pruned = prune_prefill(adapter, prepared, inputs["input_ids"], inputs["attention_mask"], inputs["video_grid_thw"],
                               session.config)  # fmt: skip
        deepstack = adapter.pruned_deepstack(prepared, pruned)
        _, block, next_position = session._prefill_block(QUESTION, use_cache=False)
    assert torch.equal(block.positions, pruned.position_ids[:, 0])
    assert torch.equal(block.embeds, pruned.inputs_embeds[0])
    kept_ids = inputs["input_ids"][0, pruned.kept_index[0]]
    assert torch.equal(block.visual, kept_ids == model.config.video_token_id)
    assert len(block.deepstack) == len(deepstack) == 2
    for mine, theirs in zip(block.deepstack, deepstack):
        assert torch.equal(mine, theirs)
    assert next_position == int(prepared.rope_deltas) + inputs["input_ids"].shape[1]


def test_qwen3_vl_answers_need_the_deepstack_features(frames):
    """Negative control: the same session without deepstack features answers differently from the
    offline model, so the equality above depends on them."""
    model, processor = tiny("qwen3_vl")
    session = StreamSession(model, processor, keep_frames=True, fps=2.0, **MEMORY)
    encode = session.ops.encode_step_parts
    session.ops.encode_step_parts = lambda pixels, grid: (encode(pixels, grid)[0], None)
    differs = []
    for i, frame in enumerate(frames):
        session.push(frame, i / 2.0)
        if i in (9, 15, 23):
            differs.append(session.ask(QUESTION, max_new_tokens=6).token_ids != offline_tokens(model, session))
    assert any(differs)


def test_qwen3_5_question_restores_the_recurrent_state_exactly(frames):
    model, processor = tiny("qwen3_5")
    session = StreamSession(model, processor, fps=2.0, **MEMORY)
    for i, frame in enumerate(frames[:16]):
        session.push(frame, i / 2.0)
    cache, ops = session._cache, session.ops
    before, length = linear_states(cache), ops.cache_length(cache)
    assert before and length > len(session._head)
    first = session.ask(QUESTION, max_new_tokens=6)
    after = linear_states(cache)
    assert ops.cache_length(cache) == length and all(torch.equal(a, b) for a, b in zip(before, after))
    assert session.ask(QUESTION, max_new_tokens=6).token_ids == first.token_ids
    assert session.stats()["cache"]["bytes"] > sum(t.numel() * t.element_size() for t in after) > 0
    # control: running text on the cache without the restore does change the recurrent state
    with torch.inference_mode():
        ops.forward(ops.embed([5, 6, 7]), ops.text_positions(10_000, 3), cache)
    assert not all(torch.equal(a, b) for a, b in zip(before, linear_states(cache)))
    with pytest.raises(UnsupportedModelError, match="recurrent state"):
        ops.drop(cache, 3, 5)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_memory_cap_cuts_whole_blocks_or_re_prefills_the_cache(family):
    """Under ``max_memory_tokens`` Qwen3-VL cuts the dropped frames' whole blocks (timestamp text
    included) out of its cache; Qwen3.5 (recurrent state) prefills its cache again, which makes its
    reused answers equal full prefills of the same capped memory."""
    from fluxmem.session import Block

    model, processor = tiny(family)
    # the cap counts each step's timestamp and vision start/end too: 160 leaves room for long-term frames
    session = StreamSession(model, processor, fps=2.0, max_memory_tokens=160, keep_frames=True, **MEMORY)  # holds segments
    caches = []  # every cache object the session used (kept alive, so identities stay distinct)
    for i, frame in enumerate(moving_square_frames(40, square=56)):
        session.push(frame, i / 2.0)
        if session._cache is not None and not any(c is session._cache for c in caches):
            caches.append(session._cache)
        if family == "qwen3_5" and i in (25, 39):
            reused = session.ask(QUESTION, max_new_tokens=5)
            assert reused.token_ids == session.ask(QUESTION, max_new_tokens=5, reuse_cache=False).token_ids, i
    memory, ops = session.memory, session.ops
    evicted = session.stats()["memory"]["evicted_frames"]
    assert evicted >= 3
    blocks = [Block(ops.embed(session._head), ops.text_positions(0, len(session._head)))]
    blocks += [session._segment(i) for i in range(evicted, memory.num_final)]
    prefix = Block.join(blocks)
    assert session.stats()["cache"]["tokens"] == prefix.embeds.shape[0]
    assert session.stats()["cache"]["frames"] == memory.num_final - evicted
    assert (len(caches) > 1) == (family == "qwen3_5")  # re-prefilled into a new cache vs cut in place
    if family == "qwen3_vl":  # first-layer keys depend on a token alone: the surviving rows are the right ones
        fresh = ops.new_cache()
        with torch.inference_mode():
            ops.forward_block(prefix, fresh)
        assert torch.equal(session._cache.layers[0].keys, fresh.layers[0].keys)
    assert len(session.ask(QUESTION, max_new_tokens=3).token_ids) >= 1


def test_qwen3_per_frame_budget_resizes_steps_and_whole_video_alike(frames):
    """Qwen3VLVideoProcessor budgets the whole clip; the session scales a per-frame budget by the
    frame count, so a 9-token-per-frame cap shrinks every 112x112 frame to 3x3 cells (of 32 px: 16-px
    patches, merged 2x2) both ways."""
    model, processor = tiny("qwen3_vl")
    session = StreamSession(model, processor, max_pixels=32 * 32 * 9, **MEMORY)
    video = torch.from_numpy(frames[:8]).permute(0, 3, 1, 2)
    steps = [session.ops.step_pixels(video[i : i + 2]) for i in range(0, 8, 2)]
    text = session._render(QUESTION, [], with_video=True)
    whole = session.ops.offline_inputs(text, video, fps=1.0)
    assert all(grid.tolist() == [[1, 6, 6]] for _, grid in steps)
    assert whole["video_grid_thw"].tolist() == [[4, 6, 6]]
    assert torch.equal(torch.cat([pixels for pixels, _ in steps]), whole["pixel_values_videos"])


def test_a_timestamp_format_the_processor_does_not_write_is_refused(frames):
    """The layout is checked against the processor's own text on a probe: a session that would
    write different timestamps fails loudly instead of answering slightly wrong."""
    model, processor = tiny("qwen3_vl")
    session = StreamSession(model, processor, fps=2.0, **MEMORY)
    session.ops.timestamp_text = lambda step, fps: f"<{step * 2 / fps:.2f} seconds>"
    with pytest.raises(UnsupportedModelError, match="timestamp blocks differently"):
        session.push(frames[0], 0.0)  # checked at the first frame, before anything changes
    assert session.time is None and session.stats()["frames_seen"] == 0


def test_capped_qwen3_vl_stream_holds_constant_bytes_past_the_cap():
    """A capped Qwen3-VL session streamed far past its cap holds no more visual tokens, cache bytes
    and deepstack-extras bytes late in a periodic clip than early on; a final frame keeps only its
    kept cells' deepstack rows while a full prefill may need them (keep_frames=True), none once its
    keys/values are cached otherwise, and an evicted one none."""
    model, processor = tiny("qwen3_vl")
    session = StreamSession(model, processor, fps=2.0, max_memory_tokens=64, keep_frames=True, **MEMORY)
    lean = StreamSession(model, processor, fps=2.0, max_memory_tokens=64, **MEMORY)
    levels = len(model.config.vision_config.deepstack_visual_indexes)
    row_bytes = levels * model.config.text_config.hidden_size * 4  # float32
    seen = []
    for i, frame in enumerate(moving_square_frames(120, square=56)):  # 60 grid steps, times 10..59 s two digits
        session.push(frame, i / 2.0)
        lean.push(frame, i / 2.0)
        if i % 2 == 0:
            continue
        stats = session.stats()
        memory = session.memory
        final, steps, evicted = memory.num_final, memory.num_frames, stats["memory"]["evicted_frames"]
        kept_final = sum(session._kept_counts[evicted:final])
        assert stats["extras_bytes"] == ((steps - final) * memory.cells + kept_final) * row_bytes
        assert lean.stats()["extras_bytes"] == (steps - final) * memory.cells * row_bytes
        assert lean.stats()["memory"] == stats["memory"]  # same eviction decisions
        assert stats["memory"]["kept"] <= 64 + (steps - final) * memory.cells
        if i // 2 >= 24:
            seen.append((stats["memory"]["kept"], stats["cache"]["tokens"], stats["cache"]["bytes"], stats["extras_bytes"],
                         lean.stats()["resident_bytes"]["total"]))
    assert session.stats()["memory"]["evicted_frames"] >= 40  # far past the cap
    # the clip repeats every 3 grid steps (square positions 0, 28, 56 px; 2 frames a step); the cap
    # cuts in batches, so what is held oscillates: no growth over 36 steps past the cap
    assert len(seen) >= 36
    half = len(seen) // 2
    for column in range(len(seen[0])):
        assert max(s[column] for s in seen[half:]) <= max(s[column] for s in seen[:half]), (column, seen)
