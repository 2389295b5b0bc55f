"""Triton kernels of the advantage ops (CUDA tensors; CPU tensors under ``TRITON_INTERPRET=1`` for tests).

GAE: one program per row walks its row backwards in tiles (the whole row up to 1024 positions, see
``gae_block``). At each position both backward recurrences (the next valid value and the advantage)
are one affine map of the state (value, advantage), the identity at masked positions; the maps of a
tile are composed with ``tl.associative_scan``, each input is loaded once, and the tile's earliest
state is carried into the next (earlier) tile. Tiles are loaded in reversed time order so that a
forward scan is a backward pass in time. With whitening the same kernel also emits per-row moments
of the advantages, so ``ppo_advantages`` is this kernel plus one in-place apply pass.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import KL_ESTIMATORS

NAME = "triton"
BLOCK_T = 256


@triton.jit
def _nonfinite(x, m):
    return tl.max(((x != x) | (tl.abs(x) == float("inf"))) & m, axis=0).to(tl.int32)


@triton.jit
def _nonfinite_scalar(x):
    return ((x != x) | (tl.abs(x) == float("inf"))).to(tl.int32)


@triton.jit
def _kl(lp, ref, ESTIMATOR: tl.constexpr):
    d = lp - ref
    if ESTIMATOR == 0:
        kl = d
    elif ESTIMATOR == 1:
        kl = 0.5 * d * d
    else:  # k3 = expm1(y) - y with y = -d: the two cancel for small |y|, so a series below 1/2
        y = -d
        s = (((((y * (1.0 / 5040) + 1.0 / 720) * y + 1.0 / 120) * y + 1.0 / 24) * y + 1.0 / 6) * y + 0.5) * y * y
        kl = tl.where(tl.abs(y) < 0.5, s, tl.exp(y) - 1.0 - y)
    return kl


@triton.jit
def _compose(a1, c1, d1, e1, f1, a2, c2, d2, e2, f2):
    # affine maps x -> M x + (e, f) of the state x = (next valid value, advantage), with M = [[a, 0], [c, d]]:
    # apply map 1 first, then map 2
    return a2 * a1, c2 * a1 + d2 * c1, d2 * d1, a2 * e1 + e2, c2 * e1 + d2 * f1 + f2


@triton.jit
def _gae_kernel(r_ptr, v_ptr, m_ptr, score_ptr, lp_ptr, ref_ptr, adv_ptr, ret_ptr, kl_ptr, flags_ptr, moments_ptr,
                T, gamma, lam, kl_coef,
                SHAPED: tl.constexpr, ESTIMATOR: tl.constexpr, MOMENTS: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = row * T
    idx = tl.arange(0, BLOCK)
    first = idx == BLOCK - 1  # the tile's earliest position: its state is carried into the next tile
    nv = 0.0        # value at the next valid position after the current tile
    last = 0.0      # advantage at that position
    lastpos = -1    # last valid position of the row (SHAPED: where the score goes)
    kl_sum = 0.0
    n = 0.0         # MOMENTS: count, mean and sum of squared deviations of the advantages (Chan et al.)
    mean = 0.0
    m2 = 0.0
    bad = tl.zeros((), tl.int32)
    if SHAPED:
        score = tl.load(score_ptr + row).to(tl.float32)
        bad |= _nonfinite_scalar(score) << 3
    n_tiles = tl.cdiv(T, BLOCK)
    for k in range(n_tiles):
        start = (n_tiles - 1 - k) * BLOCK
        t = start + BLOCK - 1 - idx            # reversed: element 0 is the latest position
        inb = t < T
        m = (tl.load(m_ptr + base + t, mask=inb, other=0) != 0) & inb
        v = tl.load(v_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        bad |= _nonfinite(v, m) << (2 if SHAPED else 1)
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
        # valid t: (nv, adv) -> (v_t, r_t - v_t + gamma*nv + gamma*lam*adv); masked t: identity. One scan
        # over the composed maps runs both backward recurrences with each input loaded once.
        one, zero = tl.full((BLOCK,), 1.0, tl.float32), tl.zeros((BLOCK,), tl.float32)
        a, c, d, e, f = tl.associative_scan(
            (tl.where(m, zero, one), tl.where(m, gamma, zero), tl.where(m, gamma * lam, one), tl.where(m, v, zero),
             tl.where(m, r - v, zero)), 0, _compose)
        adv = c * nv + d * last + f
        out = tl.where(m, adv, 0.0)
        tl.store(adv_ptr + base + t, out.to(adv_ptr.dtype.element_ty), mask=inb)
        tl.store(ret_ptr + base + t, tl.where(m, adv + v, 0.0).to(ret_ptr.dtype.element_ty), mask=inb)
        if MOMENTS:
            cnt = tl.sum(m.to(tl.float32), axis=0)
            tile_mean = tl.sum(out, axis=0) / tl.maximum(cnt, 1.0)
            dev = tl.where(m, adv - tile_mean, 0.0)
            delta = tile_mean - mean
            total = n + cnt
            mean += delta * cnt / tl.maximum(total, 1.0)
            m2 += tl.sum(dev * dev, axis=0) + delta * delta * n * cnt / tl.maximum(total, 1.0)
            n = total
        nv_new = tl.sum(tl.where(first, a * nv + e, 0.0), axis=0)
        last = tl.sum(tl.where(first, adv, 0.0), axis=0)
        nv = nv_new
    if SHAPED:
        tl.store(kl_ptr + row, kl_sum)
    if MOMENTS:
        tl.store(moments_ptr + row, n)
        tl.store(moments_ptr + tl.num_programs(0) + row, mean)
        tl.store(moments_ptr + 2 * tl.num_programs(0) + row, m2)
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
    bad = _nonfinite_scalar(score) << 2
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


def gae_block(T: int) -> tuple[int, int]:
    """(positions per tile, warps) for rows of T: the whole row in one tile up to 1024, so short rows
    waste no lanes and long ones take few serial steps."""
    block = min(max(triton.next_power_of_2(T), 64), 1024)
    return block, max(1, block // 128)


def _run_gae(rewards, values, mask, gamma, lam, out, shaped=None, moments=False):
    B, T = mask.shape
    if out is not None:
        adv, ret = out
    else:
        if shaped is None:
            out_dtype = torch.promote_types(rewards.dtype, values.dtype)
        else:  # shaped = (scores, logprobs, ref_logprobs, kl_coef, kl_estimator)
            out_dtype = torch.promote_types(torch.promote_types(shaped[1].dtype, shaped[2].dtype), values.dtype)
        adv = torch.empty(B, T, dtype=out_dtype, device=mask.device)
        ret = torch.empty_like(adv)
    flags = torch.empty(B, dtype=torch.int32, device=mask.device)
    kl = torch.empty(B, dtype=torch.float32, device=mask.device)
    stats = torch.empty(3, B, dtype=torch.float32, device=mask.device)
    scores, lp, ref, kl_coef, est = shaped if shaped is not None else (values, values, values, 0.0, "k1")
    block, warps = gae_block(T)
    _gae_kernel[(B,)](rewards if rewards is not None else values, values, _u8(mask), scores, lp, ref,
                      adv, ret, kl, flags, stats, T, float(gamma), float(lam), float(kl_coef),
                      SHAPED=shaped is not None, ESTIMATOR=KL_ESTIMATORS.index(est), MOMENTS=moments,
                      BLOCK=block, num_warps=warps)
    return adv, ret, kl, flags, stats


def gae(rewards, values, mask, gamma, lam, out=None):
    adv, ret, _, flags, _ = _run_gae(rewards, values, mask, gamma, lam, out)
    return adv, ret, flags


def _whiten_stats(row_stats, eps):
    """Per-row (count, mean, M2) [3, B] combined across rows in float64 (Chan et al.): the batch
    (mean, 1/std) as float32 [2] on the device, and the count; no host sync."""
    n, mu, m2 = row_stats.double()
    total = n.sum()
    gmean = (n * mu).sum() / total.clamp(min=1)
    var = (m2 + n * (mu - gmean) ** 2).sum() / (total - 1).clamp(min=1)
    return torch.stack([gmean, torch.rsqrt(var + eps)]).float(), total.to(torch.int64)


def _whiten_apply(x, mask, stats, shift_mean, y):
    B, T = mask.shape
    _whiten_apply_kernel[(B, triton.cdiv(T, BLOCK_T))](x, _u8(mask), y, stats, T, SHIFT_MEAN=shift_mean,
                                                       BLOCK=BLOCK_T)
    return y


def masked_whiten(x, mask, shift_mean, eps):
    B, T = mask.shape
    row_stats = torch.empty(3, B, dtype=torch.float32, device=x.device)
    flags = torch.empty(B, dtype=torch.int32, device=x.device)
    _row_moments_kernel[(B,)](x, _u8(mask), row_stats[0], row_stats[1], row_stats[2], flags, T, BLOCK=BLOCK_T)
    stats, count = _whiten_stats(row_stats, eps)
    return _whiten_apply(x, mask, stats, shift_mean, torch.empty_like(x)), count, flags


def shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, kl_estimator):
    B, T = mask.shape
    out = torch.empty(B, T, dtype=torch.promote_types(logprobs.dtype, ref_logprobs.dtype), device=mask.device)
    flags = torch.empty(B, dtype=torch.int32, device=mask.device)
    _shape_rewards_kernel[(B,)](scores, logprobs, ref_logprobs, _u8(mask), out, flags, T, float(kl_coef),
                                ESTIMATOR=KL_ESTIMATORS.index(kl_estimator), BLOCK=BLOCK_T)
    return out, flags


def ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef, kl_estimator, gamma, lam, whiten, eps,
                   out=None):
    """The GAE kernel also emits per-row moments of the advantages, so whitening is one more pass."""
    adv, ret, kl, flags, row_stats = _run_gae(None, values, mask, gamma, lam, out,
                                              shaped=(scores, logprobs, ref_logprobs, kl_coef, kl_estimator),
                                              moments=whiten)
    if whiten:
        stats, count = _whiten_stats(row_stats, eps)
        _whiten_apply(adv, mask, stats, True, adv)
    else:
        count = mask.sum().to(torch.int64)
    return adv, ret, kl, count, flags
