"""The token budget that keeps an in-process grader under a memory cap (``Grader(memory_gib=...)``).

The in-process GPU mode for trainers whose GPU is mostly taken (vLLM holds its
``gpu_memory_utilization`` share in OpenRLHF and verl rollouts): the grader sizes each forward pass so
that its weights plus one pass's activations stay under the cap, instead of growing until torch runs
out of memory. The cap counts what torch allocates for the grader; a process's CUDA context comes on
top, once per process.

Activations are estimated per token from the model's config at a decoder layer's widest point, the
MLP: the residual stream and its norm (2 H) plus the gate, up and their product (3 I) in the model's
dtype, RMSNorm's float32 copies (2 H x 4 bytes), and each hidden state kept for the heads (H), with a
1.5x margin for the allocator's rounding and short-lived temporaries. SDPA's dense tree mask adds
``T x (1 + dtype size)`` bytes per token of a row ``T`` long (FlexAttention builds no dense mask).
Measured on CPU (torch profiler memory timeline, embedded SmolLM2, token budgets 2048-8192): 12-14 KiB
per budget token in bfloat16 and 24-30 KiB in float32, under the estimate before its margin (16 and 27).
"""
from __future__ import annotations

import math

import torch

GiB = 1 << 30
MARGIN = 1.5
RESERVE = 64 << 20  # the yes/no head's rows, pooled features and index tensors of one pass


def check_cap(memory_gib) -> float:
    """``memory_gib`` if it is a positive finite number, else ``ValueError`` naming it."""
    if isinstance(memory_gib, bool) or not isinstance(memory_gib, (int, float)) or not 0 < memory_gib < math.inf:
        raise ValueError(f"memory_gib must be a positive number of GiB, got {memory_gib!r}")
    return memory_gib


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers, as loaded."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def token_bytes(config, dtype: torch.dtype, kept_layers: int, dense_mask_length: int) -> float:
    """Estimated activation bytes per token of one forward pass, margin included (see the module
    docstring); ``dense_mask_length``: the longest row when the attention takes a dense mask, else 0."""
    h = config.hidden_size
    i = getattr(config, "intermediate_size", None) or 4 * h
    size = torch.empty((), dtype=dtype).element_size()
    return MARGIN * (size * (2 * h + 3 * i + kept_layers * h) + 4 * 2 * h + dense_mask_length * (1 + size))


def token_budget(model: torch.nn.Module, memory_gib: float, kept_layers: int, longest_row: int,
                 dense_mask: bool) -> int:
    """Most tokens ``B`` one forward pass of ``model`` may hold so that weights + activations stay
    under ``memory_gib``, for rows up to ``min(longest_row, B)`` tokens (the caller cuts longer ones);
    ``dense_mask``: the attention takes SDPA's dense mask. Raises ``ValueError`` when the weights
    leave no room for a pass of 256 tokens."""
    check_cap(memory_gib)
    weights = weight_bytes(model)
    room = memory_gib * GiB - weights - RESERVE
    dtype = next(model.parameters()).dtype
    a = token_bytes(model.config, dtype, kept_layers, 0)
    c = token_bytes(model.config, dtype, kept_layers, 1) - a if dense_mask else 0.0  # mask bytes per token per row token
    # the mask costs B x T x c with T <= B: the largest B with B (a + c B) <= room, or with T = longest_row
    budget = room / a if c == 0 else (math.sqrt(a * a + 4 * c * max(room, 0)) - a) / (2 * c)
    if budget > longest_row:
        budget = room / (a + c * longest_row)
    if budget < 256:
        raise ValueError(f"memory_gib={memory_gib:g} leaves no room for activations: the grader's weights take "
                         f"{weights / GiB:.2f} GiB and a pass of 256 tokens needs about "
                         f"{(RESERVE + 256 * (a + 256 * c)) / GiB:.2f} GiB more; raise memory_gib or load a smaller "
                         "dtype")
    return int(budget)
