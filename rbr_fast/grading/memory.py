"""The token budget that keeps an in-process grader under a memory cap (``Grader(memory_gib=...)``).

The in-process GPU mode for trainers whose GPU is mostly taken (vLLM holds its
``gpu_memory_utilization`` share in OpenRLHF and verl rollouts): the grader sizes each forward pass so
that its weights plus one pass's activations stay under the cap, instead of growing until torch runs
out of memory. The cap counts what torch allocates for the grader; a process's CUDA context comes on
top, once per process.

Activations are estimated per token from the model's config at a decoder layer's widest point, the
MLP: the residual stream and its norm (2 H) plus the gate, up and their product (3 I) in the model's
dtype, RMSNorm's float32 copies (2 H x 4 bytes), and each hidden state kept for the heads (H).
Building the attention mask takes some bytes per element of each row's T x T grid, so each token of
a row T tokens long costs T times that: 1 + 2 x the dtype size for SDPA's dense mask (the boolean
mask, its additive copy, a padded copy), 14 for FlexAttention's ``create_block_mask``, which evaluates
the rule over the whole grid (measured 10-13.5 on CPU at T = 3000-9000). FlexAttention's figure is the
larger, so passes sized for it stay within the cap where the grader falls back to SDPA. Everything
has a 1.5x margin for the allocator's rounding and short-lived temporaries. Measured on CPU
(``benchmarks/grader_memory.py``, embedded SmolLM2, SDPA): the activations take 33-42% of the room
the cap leaves beside the weights and the reserve.
"""
from __future__ import annotations

import math

import torch

GiB = 1 << 30
MARGIN = 1.5
RESERVE = 64 << 20  # the yes/no head's rows, pooled features and index tensors of one pass
FLEX_MASK_BYTES = 14  # per grid element while FlexAttention's block mask is built (see above)


def check_cap(memory_gib) -> float:
    """``memory_gib`` if it is a positive finite number, else ``ValueError`` naming it."""
    if isinstance(memory_gib, bool) or not isinstance(memory_gib, (int, float)) or not 0 < memory_gib < math.inf:
        raise ValueError(f"memory_gib must be a positive number of GiB, got {memory_gib!r}")
    return memory_gib


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers, as loaded."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def mask_bytes(attention: str, dtype: torch.dtype) -> int:
    """Bytes per element of a row's T x T grid that building the attention mask takes (see above)."""
    dense = 1 + 2 * torch.empty((), dtype=dtype).element_size()
    return max(FLEX_MASK_BYTES, dense) if attention == "flex_attention" else dense


def _attention(config) -> str:
    return getattr(config, "_attn_implementation", None) or "sdpa"


def token_bytes(config, dtype: torch.dtype, kept_layers: int, row_length: int) -> float:
    """Estimated activation bytes per token of one forward pass in rows ``row_length`` tokens long,
    margin included (see the module docstring)."""
    h = config.hidden_size
    i = getattr(config, "intermediate_size", None) or 4 * h
    size = torch.empty((), dtype=dtype).element_size()
    return MARGIN * (size * (2 * h + 3 * i + kept_layers * h) + 4 * 2 * h
                     + row_length * mask_bytes(_attention(config), dtype))


def token_budget(model: torch.nn.Module, memory_gib: float, kept_layers: int, longest_row: int) -> int:
    """Most tokens ``B`` one forward pass of ``model`` may hold so that weights + activations stay
    under ``memory_gib``, for rows up to ``min(longest_row, B)`` tokens (the caller cuts longer ones).
    Raises ``ValueError`` when the weights leave no room for a pass of 256 tokens."""
    check_cap(memory_gib)
    weights = weight_bytes(model)
    room = memory_gib * GiB - weights - RESERVE
    dtype = next(model.parameters()).dtype
    a = token_bytes(model.config, dtype, kept_layers, 0)
    c = MARGIN * mask_bytes(_attention(model.config), dtype)  # the mask's bytes per token per token of row
    # a pass of B tokens in rows of T <= B tokens costs B (a + c T): the largest B with B (a + c B) <= room,
    # or, when that is longer than any row, the largest with T = longest_row
    budget = (math.sqrt(a * a + 4 * c * max(room, 0)) - a) / (2 * c)
    if budget > longest_row:
        budget = room / (a + c * longest_row)
    if budget < 256:
        raise ValueError(f"memory_gib={memory_gib:g} leaves no room for activations: the grader's weights take "
                         f"{weights / GiB:.2f} GiB and a pass of 256 tokens needs about "
                         f"{(RESERVE + 256 * (a + 256 * c)) / GiB:.2f} GiB more; raise memory_gib or load a smaller "
                         "dtype")
    return int(budget)
