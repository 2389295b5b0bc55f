"""Triton kernel of the RBR reward (contract in ``reference.py``).

Each program owns ``BLOCK_N`` rows and works one feature column at a time on ``[BLOCK_N]``
vectors: conjunction literals name earlier columns by a run-time index, which registers cannot be
indexed by, so each column is written to the feature output and read back from there. Every
``[BLOCK_N]`` vector has the same layout, so a row's column is read by the thread that wrote it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

NAME = "triton"
BLOCK_N = 128


@triton.jit
def _rbr_reward_kernel(x_ptr, idx_ptr, neg_ptr, w_ptr, rt_ptr, b_ptr, f_ptr, out_ptr, flags_ptr,
                       N, P, J, L, BLOCK: tl.constexpr):
    rows = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)  # N * F may pass 2**31
    live = rows < N
    F = P + J
    flags = tl.zeros((BLOCK,), tl.int32)
    for p in range(0, P):
        v = tl.load(x_ptr + rows * P + p, mask=live, other=0.0)
        flags |= ((v != v) | (tl.abs(v) == float("inf"))).to(tl.int32)
        flags |= ((v < 0) | (v > 1)).to(tl.int32) * 2
        tl.store(f_ptr + rows * F + p, v, mask=live)
    for j in range(0, J):
        prod = tl.full((BLOCK,), 1.0, tl.float32)
        for l in range(0, L):
            i = tl.load(idx_ptr + j * L + l)
            neg = tl.load(neg_ptr + j * L + l).to(tl.int32)
            # unused slots (i = -1) read column 0 and count as 1
            v = tl.load(f_ptr + rows * F + tl.maximum(i, 0), mask=live, other=1.0)
            v = tl.where(neg != 0, 1.0 - v, v)
            prod *= tl.where(i >= 0, v, 1.0)
        tl.store(f_ptr + rows * F + P + j, prod, mask=live)
    rt = tl.load(rt_ptr + rows, mask=live, other=0)
    acc = tl.load(b_ptr + rt, mask=live, other=0.0)
    for k in range(0, F):
        acc += tl.load(f_ptr + rows * F + k, mask=live, other=0.0) * tl.load(w_ptr + rt * F + k, mask=live, other=0.0)
    tl.store(out_ptr + rows, acc, mask=live)
    tl.store(flags_ptr + rows, flags, mask=live)


def rbr_reward(x, lit_idx, lit_neg, weights, rtype, bias):
    N, P = x.shape
    J, L = lit_idx.shape
    feats = torch.empty(N, P + J, dtype=torch.float32, device=x.device)
    reward = torch.empty(N, dtype=torch.float32, device=x.device)
    flags = torch.empty(N, dtype=torch.int32, device=x.device)
    # 4 warps = 128 threads = BLOCK_N: one row per thread, so each row's feature writes and
    # read-backs stay in one thread (see the module docstring)
    _rbr_reward_kernel[(triton.cdiv(N, BLOCK_N),)](x, lit_idx, lit_neg.to(torch.uint8), weights, rtype, bias, feats,
                                                  reward, flags, N, P, J, L, BLOCK=BLOCK_N, num_warps=4)
    return reward, feats, flags
