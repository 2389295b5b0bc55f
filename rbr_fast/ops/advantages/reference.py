"""The advantage ops in plain PyTorch: the readable definition and the last-resort backend.

Each function takes already-validated, same-device tensors and returns the same tuple as the
C++ and Triton backends (the contract is in ``rbr_fast.ops``). Arithmetic runs in float32
with whitening moments in float64; outputs take the promoted dtype of the per-token inputs.
"""
from __future__ import annotations

import torch

NAME = "ref"
KL_ESTIMATORS = ("k1", "k2", "k3")


def _nonfinite_flags(mask: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
    """int32 [B]: bit i set where input i is NaN/inf at a valid position of that row."""
    flags = torch.zeros(mask.shape[0], dtype=torch.int32, device=mask.device)
    for bit, x in enumerate(xs):
        bad = (~torch.isfinite(x) & mask).any(dim=1)
        flags |= bad.to(torch.int32) << bit
    return flags


def _nonfinite_scores(scores: torch.Tensor) -> torch.Tensor:
    """int32 [B]: 1 where a row's score is NaN/inf in float32, the precision it is used in (whatever its mask)."""
    return (~torch.isfinite(scores.float())).to(torch.int32)


def _into(out, *results):
    """The results, or copied into the caller's ``out`` tensors (the contract of every backend)."""
    if out is None:
        return results
    return tuple(o.copy_(r) for o, r in zip(out, results))


def gae(rewards, values, mask, gamma: float, lam: float, out=None):
    """Per-timestep backward loop, vectorised over rows (the algorithm TRL/OpenRLHF/verl use),
    with masked positions skipped: they carry the next valid value and advantage through."""
    r, v, m = rewards.float(), values.float(), mask
    B, T = r.shape
    adv = torch.zeros(B, T, dtype=torch.float32, device=r.device)
    next_value = torch.zeros(B, dtype=torch.float32, device=r.device)
    last = torch.zeros(B, dtype=torch.float32, device=r.device)
    for t in range(T - 1, -1, -1):
        mt = m[:, t]
        delta = r[:, t] + gamma * next_value - v[:, t]
        cand = delta + gamma * lam * last
        last = torch.where(mt, cand, last)
        next_value = torch.where(mt, v[:, t], next_value)
        adv[:, t] = torch.where(mt, last, 0.0)
    ret = torch.where(m, adv + v, 0.0)
    dtype = torch.promote_types(rewards.dtype, values.dtype)
    return *_into(out, adv.to(dtype), ret.to(dtype)), _nonfinite_flags(m, rewards, values)


def _moments(x, mask):
    """count, mean and unbiased variance of x over valid positions, in float64."""
    xd = torch.where(mask, x.double(), 0.0)
    n = mask.sum()
    mean = xd.sum() / n.clamp(min=1)
    m2 = torch.where(mask, (xd - mean) ** 2, 0.0).sum()
    var = m2 / (n - 1).clamp(min=1)
    return n, mean, var


def _whiten_apply(x, mask, mean, var, shift_mean: bool, eps: float):
    y = (x.double() - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        y = y + mean
    return torch.where(mask, y, 0.0)


def masked_whiten(x, mask, shift_mean: bool, eps: float):
    n, mean, var = _moments(x, mask)
    y = _whiten_apply(x, mask, mean, var, shift_mean, eps)
    return y.to(x.dtype), n.to(torch.int64), _nonfinite_flags(mask, x)


def kl_penalty(logprobs, ref_logprobs, estimator: str):
    """Per-token KL estimate between policy and reference from sampled-token log-probs."""
    d = logprobs - ref_logprobs
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d * d
    # k3: r - 1 - log r with r = p_ref / p, unbiased and always >= 0. expm1(y) - y (y = -d) as written
    # loses 1e-4 of the value at |y| = 3e-4 in float32 (the terms cancel), so below |y| = 1/2 its
    # Taylor series (the first dropped term is 1e-6 of the sum there); float64 is not on every device
    y = -(d if d.dtype == torch.float64 else d.float())
    series = (((((y / 5040 + 1 / 720) * y + 1 / 120) * y + 1 / 24) * y + 1 / 6) * y + 0.5) * y * y
    return torch.where(y.abs() < 0.5, series, torch.expm1(y) - y).to(d.dtype)


def _last_valid_onehot(mask):
    """bool [B, T]: true at the last valid position of each row (none for empty rows)."""
    T = mask.shape[1]
    idx = torch.arange(T, device=mask.device).expand_as(mask)
    last = torch.where(mask, idx, -1).amax(dim=1, keepdim=True)
    return idx == last


def shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef: float, kl_estimator: str):
    kl = kl_penalty(logprobs.float(), ref_logprobs.float(), kl_estimator)
    rew = -kl_coef * kl + torch.where(_last_valid_onehot(mask), scores.float()[:, None], 0.0)
    rew = torch.where(mask, rew, 0.0)
    out = torch.promote_types(logprobs.dtype, ref_logprobs.dtype)
    return rew.to(out), _nonfinite_flags(mask, logprobs, ref_logprobs) | _nonfinite_scores(scores) << 2


def ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef: float, kl_estimator: str,
                   gamma: float, lam: float, whiten: bool, eps: float, out=None):
    rew, f1 = shape_rewards(scores, logprobs.float(), ref_logprobs.float(), mask, kl_coef, kl_estimator)
    adv, ret, f2 = gae(rew, values.float(), mask, gamma, lam)
    kl = torch.where(mask, kl_penalty(logprobs.float(), ref_logprobs.float(), kl_estimator), 0.0)
    n = mask.sum().to(torch.int64)
    if whiten:
        n, mean, var = _moments(adv, mask)
        adv = _whiten_apply(adv, mask, mean, var, True, eps)
    dtype = torch.promote_types(torch.promote_types(logprobs.dtype, ref_logprobs.dtype), values.dtype)
    # bits: logprobs, ref_logprobs (f1's bits 0-1), values (f2's bit 1), scores (f1's bit 2)
    flags = (f1 & 3) | ((f2 >> 1) << 2) | ((f1 >> 2) << 3)
    return *_into(out, adv.to(dtype), ret.to(dtype)), kl.sum(dim=1).float(), n.to(torch.int64), flags
