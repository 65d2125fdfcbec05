"""Qwen3.5 (``transformers.Qwen3_5ForConditionalGeneration``) and its MoE variant.

The vision side is Qwen3-VL's without deepstack: the same ``Qwen3VLProcessor`` layout (a
``<t seconds>`` timestamp and its own vision block per grid step), the same ``get_rope_index``
(every frame a one-step grid at the current text position), per-grid-step attention in the
vision tower. The adapter therefore is :class:`~fluxmem.adapters.qwen3_vl.Qwen3VLAdapter`, whose
deepstack handling switches itself off when the encoder returns no deepstack features.

The text model mixes gated-delta-rule linear-attention layers (a recurrent state and a short
convolution state per layer, no per-token keys/values) with full-attention layers
(``config.text_config.layer_types``). Input-level pruning is unaffected: the recurrent layers
simply read the kept tokens in order. What differs is cache reuse in a streaming session: the
state of a linear-attention layer after a prefix cannot be cut back to a shorter prefix
(``crop`` cannot undo a recurrent update, ``LinearAttentionLayer.is_croppable`` is False), so a
session must keep a SNAPSHOT of the cache (deep copy of every layer's key/value tensors and of the
conv/recurrent states) after the reusable prefix and restore it before each question, instead of
cropping the cache back after answering (``StreamOps.can_cut``; ``hf.snapshot`` /
``hf.restore``; ``streaming.Qwen3_5StreamOps``).
"""

from __future__ import annotations

from .qwen3_vl import Qwen3VLAdapter
from .streaming import Qwen3_5StreamOps


class Qwen3_5Adapter(Qwen3VLAdapter):
    family = "Qwen3.5"
    streaming = Qwen3_5StreamOps
    steps_are_independent = True


class Qwen3_5MoeAdapter(Qwen3_5Adapter):
    """Qwen3.5-MoE: MoE feed-forward blocks in the text model; nothing else differs for fluxmem."""

    family = "Qwen3.5-MoE"
