"""Triton kernels of the log-prob ops (contract in ``reference.py``).

One program per row streams the vocabulary in blocks with an online max / sum of exponentials per
lane (one read of the logits, no [N, V] intermediate); the lanes are merged at the end. The
backward kernel is a plain elementwise pass over a 2-D grid of (row, vocabulary block).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

NAME = "triton"
BLOCK_V = 1024


@triton.jit
def _row_stats(row_ptr, V, inv, BLOCK: tl.constexpr, ENTROPY: tl.constexpr):
    """(max, sum exp(z - max), sum exp(z - max) * z, bad) of z = inv * row."""
    offs = tl.arange(0, BLOCK)
    m = tl.full((BLOCK,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK,), tl.float32)
    d = tl.zeros((BLOCK,), tl.float32)
    bad = tl.zeros((BLOCK,), tl.int32)
    for start in range(0, V, BLOCK):
        j = start + offs
        x = tl.load(row_ptr + j, mask=j < V, other=float("-inf")).to(tl.float32)
        bad |= ((x != x) | (x == float("inf"))).to(tl.int32)
        z = x * inv
        m_new = tl.maximum(m, z)
        empty = m_new == float("-inf")  # lanes that have seen only -inf keep nothing
        scale = tl.where(empty, 1.0, tl.exp(m - m_new))
        e = tl.where(empty, 0.0, tl.exp(z - m_new))
        s = s * scale + e
        if ENTROPY:
            d = d * scale + tl.where(e > 0, e * z, 0.0)
        m = m_new
    mx = tl.max(m, 0)
    w = tl.where(m == float("-inf"), 0.0, tl.exp(m - mx))
    return mx, tl.sum(s * w, 0), tl.sum(d * w, 0), tl.max(bad, 0) | (mx == float("-inf")).to(tl.int32)


@triton.jit
def _ids_lse(row_ptr, ids_ptr, K, BLOCK_K: tl.constexpr):
    k = tl.arange(0, BLOCK_K)
    ids = tl.load(ids_ptr + k, mask=k < K, other=0)
    x = tl.load(row_ptr + ids, mask=k < K, other=float("-inf")).to(tl.float32)
    mx = tl.max(x, 0)
    safe = tl.where(mx == float("-inf"), 0.0, mx)
    return tl.where(mx == float("-inf"), float("-inf"), safe + tl.log(tl.sum(tl.exp(x - safe), 0)))


@triton.jit
def _yes_no_kernel(x_ptr, yes_ptr, no_ptr, lse_ptr, ly_ptr, ln_ptr, flags_ptr, V, KY, KN,
                   BLOCK: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * V
    mx, s, _, bad = _row_stats(base, V, 1.0, BLOCK, False)
    tl.store(lse_ptr + row, mx + tl.log(s))
    tl.store(ly_ptr + row, _ids_lse(base, yes_ptr, KY, BLOCK_K))
    tl.store(ln_ptr + row, _ids_lse(base, no_ptr, KN, BLOCK_K))
    tl.store(flags_ptr + row, bad)


@triton.jit
def _label_kernel(x_ptr, labels_ptr, logp_ptr, lse_ptr, ent_ptr, flags_ptr, V, inv, ignore_index,
                  BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * V
    mx, s, d, bad = _row_stats(base, V, inv, BLOCK, True)
    lse = mx + tl.log(s)
    label = tl.load(labels_ptr + row)
    keep = (label != ignore_index) & (label >= 0) & (label < V)  # out of range: the op raises afterwards
    picked = tl.load(base + tl.where(keep, label, 0)).to(tl.float32) * inv
    tl.store(logp_ptr + row, tl.where(keep, picked - lse, 0.0))
    tl.store(lse_ptr + row, lse)
    tl.store(ent_ptr + row, lse - d / s)
    tl.store(flags_ptr + row, bad)


@triton.jit
def _label_backward_kernel(g_ptr, x_ptr, labels_ptr, lse_ptr, out_ptr, V, inv, ignore_index, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    label = tl.load(labels_ptr + row)
    gi = tl.where(label != ignore_index, tl.load(g_ptr + row).to(tl.float32) * inv, 0.0)
    lse = tl.load(lse_ptr + row)
    x = tl.load(x_ptr + row * V + j, mask=j < V, other=float("-inf")).to(tl.float32)
    y = -gi * tl.exp(x * inv - lse) + tl.where(j == label, gi, 0.0)
    tl.store(out_ptr + row * V + j, y.to(out_ptr.dtype.element_ty), mask=j < V)


def _f32(n, device):
    return torch.empty(n, dtype=torch.float32, device=device)


def yes_no_lse(logits, yes_ids, no_ids):
    N, V = logits.shape
    lse, ly, ln = _f32(N, logits.device), _f32(N, logits.device), _f32(N, logits.device)
    flags = torch.empty(N, dtype=torch.int32, device=logits.device)
    block_k = triton.next_power_of_2(max(yes_ids.numel(), no_ids.numel(), 2))
    _yes_no_kernel[(N,)](logits, yes_ids, no_ids, lse, ly, ln, flags, V, yes_ids.numel(), no_ids.numel(),
                         BLOCK=min(BLOCK_V, triton.next_power_of_2(V)), BLOCK_K=block_k)
    return lse, ly, ln, flags


def label_logprobs(logits, labels, inv_temp, ignore_index):
    N, V = logits.shape
    logp, lse, ent = _f32(N, logits.device), _f32(N, logits.device), _f32(N, logits.device)
    flags = torch.empty(N, dtype=torch.int32, device=logits.device)
    _label_kernel[(N,)](logits, labels, logp, lse, ent, flags, V, float(inv_temp), int(ignore_index),
                        BLOCK=min(BLOCK_V, triton.next_power_of_2(V)))
    return logp, lse, ent, flags


def label_logprobs_backward(grad, logits, labels, lse, inv_temp, ignore_index):
    N, V = logits.shape
    out = torch.empty_like(logits)
    block = min(BLOCK_V, triton.next_power_of_2(V))
    _label_backward_kernel[(N, triton.cdiv(V, block))](grad, logits, labels, lse, out, V, float(inv_temp),
                                                       int(ignore_index), BLOCK=block)
    return out
