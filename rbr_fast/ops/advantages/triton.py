"""Triton kernels of the advantage ops (CUDA tensors; CPU tensors under ``TRITON_INTERPRET=1`` for tests).

One program per row walks its row backwards in tiles of ``BLOCK_T`` positions. Inside a tile both
backward recurrences of GAE (the next valid value, and the advantage) are affine maps
``x -> a*x + b`` (identity at masked positions), composed with ``tl.associative_scan``; the tile's
result is carried into the next (earlier) tile. Tiles are loaded in reversed time order so that a
forward scan is a backward pass in time.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import KL_ESTIMATORS

NAME = "triton"
BLOCK_T = 256


@triton.jit
def _compose(a1, b1, a2, b2):
    # apply (a1, b1) first, then (a2, b2): a2*(a1*x + b1) + b2
    return a2 * a1, a2 * b1 + b2


@triton.jit
def _nonfinite(x, m):
    return tl.max(((x != x) | (tl.abs(x) == float("inf"))) & m, axis=0).to(tl.int32)


@triton.jit
def _kl(lp, ref, ESTIMATOR: tl.constexpr):
    d = lp - ref
    if ESTIMATOR == 0:
        kl = d
    elif ESTIMATOR == 1:
        kl = 0.5 * d * d
    else:  # k3 = exp(-d) - 1 + d; expm1 is not in tl, so switch to a series near 0 to keep precision
        small = tl.abs(d) < 1e-3
        kl = tl.where(small, d * d * (0.5 - d / 6.0), tl.exp(-d) - 1.0 + d)
    return kl


@triton.jit
def _gae_kernel(r_ptr, v_ptr, m_ptr, score_ptr, lp_ptr, ref_ptr, adv_ptr, ret_ptr, kl_ptr, flags_ptr,
                T, gamma, lam, kl_coef,
                SHAPED: tl.constexpr, ESTIMATOR: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * T
    idx = tl.arange(0, BLOCK)
    nv = 0.0        # value at the next valid position after the current tile
    last = 0.0      # advantage at that position
    lastpos = -1    # last valid position of the row (SHAPED: where the score goes)
    kl_sum = 0.0
    bad = tl.zeros((), tl.int32)
    if SHAPED:
        score = tl.load(score_ptr + row).to(tl.float32)
    n_tiles = tl.cdiv(T, BLOCK)
    for k in range(n_tiles):
        start = (n_tiles - 1 - k) * BLOCK
        t = start + BLOCK - 1 - idx            # reversed: element 0 is the latest position
        inb = t < T
        m = (tl.load(m_ptr + base + t, mask=inb, other=0) != 0) & inb
        v = tl.load(v_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        bad |= _nonfinite(v, m) << (2 if SHAPED else 1)
        # next valid value: scan of "take v here if valid, else pass through", exclusive of t
        # itself, so it runs over the positions t+1 (loaded again, shifted by one)
        t1 = t + 1
        m1 = (tl.load(m_ptr + base + t1, mask=t1 < T, other=0) != 0) & (t1 < T)
        v1 = tl.load(v_ptr + base + t1, mask=m1, other=0.0).to(tl.float32)
        a, b = tl.associative_scan((tl.where(m1, 0.0, 1.0), v1), 0, _compose)
        nxt = a * nv + b
        if SHAPED:
            lp = tl.load(lp_ptr + base + t, mask=m, other=0.0).to(tl.float32)
            ref = tl.load(ref_ptr + base + t, mask=m, other=0.0).to(tl.float32)
            bad |= _nonfinite(lp, m) | (_nonfinite(ref, m) << 1)
            kl = tl.where(m, _kl(lp, ref, ESTIMATOR), 0.0)
            kl_sum += tl.sum(kl, axis=0)
            if lastpos < 0:
                lastpos = tl.max(tl.where(m, t, -1), axis=0)
            r = -kl_coef * kl + tl.where(t == lastpos, score, 0.0)
        else:
            r = tl.load(r_ptr + base + t, mask=m, other=0.0).to(tl.float32)
            bad |= _nonfinite(r, m)
        delta = r + gamma * nxt - v
        a, b = tl.associative_scan((tl.where(m, gamma * lam, 1.0), tl.where(m, delta, 0.0)), 0, _compose)
        adv = a * last + b
        out = tl.where(m, adv, 0.0)
        tl.store(adv_ptr + base + t, out.to(adv_ptr.dtype.element_ty), mask=inb)
        tl.store(ret_ptr + base + t, tl.where(m, adv + v, 0.0).to(ret_ptr.dtype.element_ty), mask=inb)
        # carry the element of the earliest position in the tile (element BLOCK-1)
        first = idx == BLOCK - 1
        nv = tl.sum(tl.where(first, tl.where(m, v, nxt), 0.0), axis=0)
        last = tl.sum(tl.where(first, adv, 0.0), axis=0)
    if SHAPED:
        tl.store(kl_ptr + row, kl_sum)
    tl.store(flags_ptr + row, bad)


@triton.jit
def _row_moments_kernel(x_ptr, m_ptr, count_ptr, mean_ptr, m2_ptr, flags_ptr, T, BLOCK: tl.constexpr):
    """Per row: count, mean and sum of squared deviations over valid positions (two passes, fp32)."""
    row = tl.program_id(0).to(tl.int64)
    base = row * T
    idx = tl.arange(0, BLOCK)
    n = 0.0
    s = 0.0
    bad = tl.zeros((), tl.int32)
    for start in range(0, T, BLOCK):
        t = start + idx
        m = (tl.load(m_ptr + base + t, mask=t < T, other=0) != 0) & (t < T)
        x = tl.load(x_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        bad |= _nonfinite(x, m)
        n += tl.sum(m.to(tl.float32), axis=0)
        s += tl.sum(x, axis=0)
    mean = s / tl.maximum(n, 1.0)
    m2 = 0.0
    for start in range(0, T, BLOCK):
        t = start + idx
        m = (tl.load(m_ptr + base + t, mask=t < T, other=0) != 0) & (t < T)
        x = tl.load(x_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        d = tl.where(m, x - mean, 0.0)
        m2 += tl.sum(d * d, axis=0)
    tl.store(count_ptr + row, n)
    tl.store(mean_ptr + row, mean)
    tl.store(m2_ptr + row, m2)
    tl.store(flags_ptr + row, bad)


@triton.jit
def _whiten_apply_kernel(x_ptr, m_ptr, y_ptr, stats_ptr, T, SHIFT_MEAN: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    t = tile * BLOCK + tl.arange(0, BLOCK)
    inb = t < T
    mean = tl.load(stats_ptr)
    rstd = tl.load(stats_ptr + 1)
    m = (tl.load(m_ptr + row * T + t, mask=inb, other=0) != 0) & inb
    x = tl.load(x_ptr + row * T + t, mask=m, other=0.0).to(tl.float32)
    y = (x - mean) * rstd
    if not SHIFT_MEAN:
        y += mean
    tl.store(y_ptr + row * T + t, tl.where(m, y, 0.0).to(y_ptr.dtype.element_ty), mask=inb)


@triton.jit
def _shape_rewards_kernel(score_ptr, lp_ptr, ref_ptr, m_ptr, out_ptr, flags_ptr, T, kl_coef,
                          ESTIMATOR: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * T
    idx = tl.arange(0, BLOCK)
    lastpos = -1
    for start in range(0, T, BLOCK):  # mask bytes only: find the last valid position
        t = start + idx
        m = (tl.load(m_ptr + base + t, mask=t < T, other=0) != 0) & (t < T)
        lastpos = tl.maximum(lastpos, tl.max(tl.where(m, t, -1), axis=0))
    score = tl.load(score_ptr + row).to(tl.float32)
    bad = tl.zeros((), tl.int32)
    for start in range(0, T, BLOCK):
        t = start + idx
        inb = t < T
        m = (tl.load(m_ptr + base + t, mask=inb, other=0) != 0) & inb
        lp = tl.load(lp_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        ref = tl.load(ref_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        bad |= _nonfinite(lp, m) | (_nonfinite(ref, m) << 1)
        r = -kl_coef * _kl(lp, ref, ESTIMATOR) + tl.where(t == lastpos, score, 0.0)
        tl.store(out_ptr + base + t, tl.where(m, r, 0.0).to(out_ptr.dtype.element_ty), mask=inb)
    tl.store(flags_ptr + row, bad)


def _u8(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(torch.uint8)


def _run_gae(rewards, values, mask, gamma, lam, shaped=None):
    B, T = mask.shape
    if shaped is None:
        out_dtype = torch.promote_types(rewards.dtype, values.dtype)
    else:  # shaped = (scores, logprobs, ref_logprobs, kl_coef, kl_estimator)
        out_dtype = torch.promote_types(torch.promote_types(shaped[1].dtype, shaped[2].dtype), values.dtype)
    adv = torch.empty(B, T, dtype=out_dtype, device=mask.device)
    ret = torch.empty_like(adv)
    flags = torch.empty(B, dtype=torch.int32, device=mask.device)
    kl = torch.empty(B, dtype=torch.float32, device=mask.device)
    scores, lp, ref, kl_coef, est = shaped if shaped is not None else (values, values, values, 0.0, "k1")
    _gae_kernel[(B,)](rewards if rewards is not None else values, values, _u8(mask), scores, lp, ref,
                      adv, ret, kl, flags, T, float(gamma), float(lam), float(kl_coef),
                      SHAPED=shaped is not None, ESTIMATOR=KL_ESTIMATORS.index(est), BLOCK=BLOCK_T)
    return adv, ret, kl, flags


def gae(rewards, values, mask, gamma, lam):
    adv, ret, _, flags = _run_gae(rewards, values, mask, gamma, lam)
    return adv, ret, flags


def _whiten(x, mask, shift_mean, eps, out_dtype):
    """(whitened x, count, flags): per-row moments in a kernel, combined across rows in float64."""
    B, T = mask.shape
    count, mean, m2 = (torch.empty(B, dtype=torch.float32, device=x.device) for _ in range(3))
    flags = torch.empty(B, dtype=torch.int32, device=x.device)
    _row_moments_kernel[(B,)](x, _u8(mask), count, mean, m2, flags, T, BLOCK=BLOCK_T)
    n, mu, m2 = count.double(), mean.double(), m2.double()
    total = n.sum()
    gmean = (n * mu).sum() / total.clamp(min=1)
    var = (m2 + n * (mu - gmean) ** 2).sum() / (total - 1).clamp(min=1)  # Chan et al. combination
    stats = torch.stack([gmean, torch.rsqrt(var + eps)]).float()
    y = torch.empty(B, T, dtype=out_dtype, device=x.device)
    _whiten_apply_kernel[(B, triton.cdiv(T, BLOCK_T))](x, _u8(mask), y, stats, T, SHIFT_MEAN=shift_mean,
                                                       BLOCK=BLOCK_T)
    return y, total.to(torch.int64), flags


def masked_whiten(x, mask, shift_mean, eps):
    return _whiten(x, mask, shift_mean, eps, x.dtype)


def shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, kl_estimator):
    B, T = mask.shape
    out = torch.empty(B, T, dtype=torch.promote_types(logprobs.dtype, ref_logprobs.dtype), device=mask.device)
    flags = torch.empty(B, dtype=torch.int32, device=mask.device)
    _shape_rewards_kernel[(B,)](scores, logprobs, ref_logprobs, _u8(mask), out, flags, T, float(kl_coef),
                                ESTIMATOR=KL_ESTIMATORS.index(kl_estimator), BLOCK=BLOCK_T)
    return out, flags


def ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef, kl_estimator, gamma, lam, whiten, eps):
    adv, ret, kl, flags = _run_gae(None, values, mask, gamma, lam,
                                   shaped=(scores, logprobs, ref_logprobs, kl_coef, kl_estimator))
    if whiten:
        adv, count, _ = _whiten(adv, mask, True, eps, adv.dtype)
    else:
        count = mask.sum().to(torch.int64)
    return adv, ret, kl, count, flags
