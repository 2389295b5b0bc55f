"""The log-prob kernels in plain PyTorch: the readable definition and the last-resort backend.

Contract for the kernels over a [N, V] logits matrix (rows independent; float32 results):

  yes_no_lse(logits, yes_ids, no_ids) -> (lse_all, lse_yes, lse_no, flags)
  label_logprobs(logits, labels, inv_temp, ignore_index) -> (logp, lse, entropy, flags)
  label_logprobs_backward(grad, logits, labels, lse, inv_temp, ignore_index) -> grad_logits

lse_* are logsumexp over the whole row / the id sets; flags bit 0: the row holds NaN or +inf, or
only -inf. In label_logprobs the row is scaled by inv_temp first; lse and entropy are of the scaled
row, and rows whose label is ignore_index give logp = 0 and a zero gradient.
"""
from __future__ import annotations

import torch

NAME = "ref"


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
    keep = (labels != ignore_index) & (labels >= 0) & (labels < z.shape[1])  # out of range: the op raises
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
