"""Plain PyTorch implementations of every op: the readable definition and the last-resort backend.

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


def gae(rewards, values, mask, gamma: float, lam: float):
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
    out = torch.promote_types(rewards.dtype, values.dtype)
    return adv.to(out), ret.to(out), _nonfinite_flags(m, rewards, values)


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
    # k3: r - 1 - log r with r = p_ref / p, unbiased and always >= 0
    return torch.expm1(-d) + d


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
    return rew.to(out), _nonfinite_flags(mask, logprobs, ref_logprobs)


def ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef: float, kl_estimator: str,
                   gamma: float, lam: float, whiten: bool, eps: float):
    rew, f1 = shape_rewards(scores, logprobs.float(), ref_logprobs.float(), mask, kl_coef, kl_estimator)
    adv, ret, f2 = gae(rew, values.float(), mask, gamma, lam)
    kl = torch.where(mask, kl_penalty(logprobs.float(), ref_logprobs.float(), kl_estimator), 0.0)
    n = mask.sum().to(torch.int64)
    if whiten:
        n, mean, var = _moments(adv, mask)
        adv = _whiten_apply(adv, mask, mean, var, True, eps)
    out = torch.promote_types(torch.promote_types(logprobs.dtype, ref_logprobs.dtype), values.dtype)
    flags = f1 | ((f2 >> 1) << 2)  # bits: logprobs, ref_logprobs, values
    return adv.to(out), ret.to(out), kl.sum(dim=1).float(), n.to(torch.int64), flags


# ------------------------------------------------------------------------------------------ log-probs
# Contract for the kernels over a [N, V] logits matrix (rows independent; float32 results):
#   yes_no_lse(logits, yes_ids, no_ids) -> (lse_all, lse_yes, lse_no, flags)
#   label_logprobs(logits, labels, inv_temp, ignore_index) -> (logp, lse, entropy, flags)
#   label_logprobs_backward(grad, logits, labels, lse, inv_temp, ignore_index) -> grad_logits
# lse_* are logsumexp over the whole row / the id sets; flags bit 0: the row holds NaN or +inf, or
# only -inf.
# In label_logprobs the row is scaled by inv_temp first; lse and entropy are of the scaled row, and
# rows whose label is ignore_index give logp = 0 and a zero gradient.

def _bad_rows(logits):
    """1 for rows with NaN or +inf, or with nothing but -inf."""
    bad = (torch.isnan(logits) | (logits == float("inf"))).any(dim=1) | torch.isneginf(logits).all(dim=1)
    return bad.to(torch.int32)


def _acc(x):
    """float32 working copy (float64 stays float64, so gradcheck can run on the reference)."""
    return x.double() if x.dtype == torch.float64 else x.float()


def yes_no_lse(logits, yes_ids, no_ids):
    z = _acc(logits)
    return (torch.logsumexp(z, dim=1), torch.logsumexp(z[:, yes_ids], dim=1),
            torch.logsumexp(z[:, no_ids], dim=1), _bad_rows(logits))


def label_logprobs(logits, labels, inv_temp: float, ignore_index: int):
    z = _acc(logits) * inv_temp
    lse = torch.logsumexp(z, dim=1)
    keep = labels != ignore_index
    picked = z.gather(1, torch.where(keep, labels, 0)[:, None])[:, 0]
    logp = torch.where(keep, picked - lse, 0.0)
    p = torch.softmax(z, dim=1)
    entropy = lse - (p * torch.where(p > 0, z, 0.0)).sum(dim=1)  # -inf logits carry no mass
    return logp, lse, entropy, _bad_rows(logits)


def label_logprobs_backward(grad, logits, labels, lse, inv_temp: float, ignore_index: int):
    """d logp / d logits = inv_temp * (onehot(label) - softmax(inv_temp * logits))."""
    keep = labels != ignore_index
    g = torch.where(keep, _acc(grad), 0.0)[:, None] * inv_temp
    out = -torch.exp(_acc(logits) * inv_temp - lse[:, None]) * g
    out.scatter_add_(1, torch.where(keep, labels, 0)[:, None], g)
    return out.to(logits.dtype)


# --------------------------------------------------------------------------------------------- reward

def rbr_reward(x, lit_idx, lit_neg, weights, rtype, bias):
    """Features then the per-response-type linear reward.

    ``x`` [N, P] float32; ``lit_idx`` [J, L] int32 (-1 = unused slot) and ``lit_neg`` [J, L] bool
    define J conjunctions appended to the features in order: feature P+j is the product over its
    literals of f[idx] (or 1 - f[idx] when negated), where idx may name an input column or an
    earlier conjunction. reward[n] = bias[rtype[n]] + features[n] . weights[rtype[n]].
    Returns (reward [N] float32, features [N, P+J] float32, flags [N] int32: bit 0 a non-finite
    input, bit 1 an input outside [0, 1])."""
    x = x.float()
    flags = (~torch.isfinite(x)).any(1).to(torch.int32) | (((x < 0) | (x > 1)).any(1).to(torch.int32) << 1)
    cols = list(x.unbind(1))
    for idx, neg in zip(lit_idx.tolist(), lit_neg.tolist()):
        prod = torch.ones(x.shape[0], dtype=torch.float32, device=x.device)
        for i, n in zip(idx, neg):
            if i >= 0:
                prod = prod * (1 - cols[i] if n else cols[i])
        cols.append(prod)
    feats = torch.stack(cols, 1) if cols else x
    w = weights.float()[rtype]
    reward = (feats * w).sum(1) + bias.float()[rtype]
    return reward, feats, flags


# --------------------------------------------------------------------------------------------- decode

def skinny_linear(x, weight, bias):
    """``x @ weight.T + bias`` for a few rows of ``x`` (sampling one token per sequence)."""
    return torch.nn.functional.linear(x, weight, bias)
