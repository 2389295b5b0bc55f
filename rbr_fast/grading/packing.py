"""Shared-prefix packing: one sequence per completion holding its prefix once and every question
after it, with a tree attention mask.

Row ``i`` is ``[prefix_i, tail_1, ..., tail_P]``. Prefix tokens attend causally to the prefix;
tail ``p`` tokens attend to the whole prefix and causally to tail ``p`` only, and take positions
``len(prefix_i) + 0, 1, ...``: each tail sees exactly what it would see appended alone to the
prefix, so one forward pass gives the answers of all P prompts while the prefix's keys/values are
computed once (the same reuse as a KV cache, without P copies of the cache).

The mask comes in two forms from one rule (``tree_rule``): a dense ``[B, 1, T, T]`` bool tensor for
SDPA (which then cannot take its flash path), and a FlexAttention ``BlockMask`` whose fully masked
blocks are skipped, for a model loaded with ``attn_implementation="flex_attention"`` (the grader's
default on CUDA).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


def tree_rule(seg_q: torch.Tensor, seg_k: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Whether query position ``q`` (segment ``seg_q``) may attend to key position ``k`` (``seg_k``):
    causally, within the prefix (segment 0) or its own tail. Padding (segment -1) queries attend
    to themselves only: a row with no key gives NaN, and the padding's values must stay finite
    (0 * NaN in the value matmul would reach real tokens). Elementwise, so it serves both as a
    broadcast over whole index grids and as a FlexAttention ``mask_mod``."""
    real = (k <= q) & (seg_q >= 0) & (seg_k >= 0) & ((seg_k == 0) | (seg_k == seg_q))
    return real | ((q == k) & (seg_q < 0))


@dataclass
class Packed:
    input_ids: torch.Tensor  # [B, T] int64, right-padded with pad_id
    position_ids: torch.Tensor  # [B, T] int64
    segments: torch.Tensor  # [B, T] int64: 0 prefix, p + 1 tail p, -1 padding
    answer_index: torch.Tensor  # [B, P] int64: position of each tail's last token

    def dense_mask(self) -> torch.Tensor:
        """``[B, 1, T, T]`` bool, True = may attend (for SDPA)."""
        T = self.segments.shape[1]
        pos = torch.arange(T)
        return tree_rule(self.segments[:, :, None], self.segments[:, None, :], pos[:, None], pos[None])[:, None]

    def block_mask(self, device):
        """The same mask as a FlexAttention ``BlockMask`` on ``device``: ``create_block_mask`` evaluates
        the rule over the grid once per batch to find the empty blocks, which attention then skips."""
        from torch.nn.attention.flex_attention import create_block_mask
        seg = self.segments.to(device)
        B, T = seg.shape

        def mask_mod(b, h, q, k):
            return tree_rule(seg[b, q], seg[b, k], q, k)

        return create_block_mask(mask_mod, B, None, T, T, device=device)


def pack(prefixes: Sequence[Sequence[int]], tails: Sequence[Sequence[int]], pad_id: int) -> Packed:
    """Pack ``prefixes`` (one per row) with the shared ``tails`` (one per question)."""
    if not prefixes or not tails or any(len(t) == 0 for t in tails):
        raise ValueError("pack: need at least one prefix and one non-empty tail")
    tail_ids = torch.tensor([t for tail in tails for t in tail], dtype=torch.int64)
    tail_len = torch.tensor([len(t) for t in tails], dtype=torch.int64)
    tail_seg = torch.repeat_interleave(torch.arange(1, len(tails) + 1), tail_len)
    tail_pos = torch.cat([torch.arange(n) for n in tail_len.tolist()])
    tail_end = torch.cumsum(tail_len, 0) - 1
    lengths = [len(p) for p in prefixes]
    T = max(lengths) + len(tail_ids)
    B = len(prefixes)
    ids = torch.full((B, T), pad_id, dtype=torch.int64)
    pos = torch.zeros(B, T, dtype=torch.int64)
    seg = torch.full((B, T), -1, dtype=torch.int64)  # 0 prefix, p+1 tail p, -1 padding
    for i, (p, n) in enumerate(zip(prefixes, lengths)):
        ids[i, :n] = torch.as_tensor(p, dtype=torch.int64)
        ids[i, n:n + len(tail_ids)] = tail_ids
        pos[i, :n] = torch.arange(n)
        pos[i, n:n + len(tail_ids)] = n + tail_pos
        seg[i, :n] = 0
        seg[i, n:n + len(tail_ids)] = tail_seg
    answer = torch.tensor(lengths)[:, None] + tail_end[None, :]
    return Packed(ids, pos, seg, answer)


def buckets(lengths: Sequence[int], extra: int, token_budget: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first: a batch of ``b`` rows
    padded to its longest ``length + extra`` stays within ``token_budget`` tokens (a row longer
    than the budget gets a batch of its own). Deterministic for given lengths."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    for i in order:
        if out and (len(out[-1]) + 1) * (lengths[out[-1][0]] + extra) <= token_budget:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, T], attention mask [B, T] int64) of rows right-padded with ``pad_id``."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.int64)
    mask = torch.zeros(len(rows), T, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.int64)
        mask[i, :len(r)] = 1
    return ids, mask
