"""Public advantage ops: GAE, masked whitening, KL reward shaping and the fused PPO path.

Every function validates its inputs (raising ``TypeError``/``ValueError`` that name the argument),
then runs on the backend chosen by ``rbr_fast.ops.dispatch``: ``reference.py`` (the definition),
``cpp.py`` (over ``csrc/advantages.cpp``) or ``triton.py``. All per-token tensors are ``[B, T]``;
``mask`` is a bool tensor that is true at the positions that take part (response tokens); masked
positions are ignored on input and are 0 on output. Accumulation is float32 on every backend.

Each call syncs with the device at most once (its NaN/inf and count checks are read back together,
see ``validate.Checks``). ``gae`` and ``ppo_advantages`` take ``out=(advantages, returns)``: a
training loop that passes the same buffers every step avoids allocating fresh ``[B, T]`` outputs,
which on CPU (glibc returns large freed blocks to the kernel) costs more page faults than the op
itself. Without ``out=`` the C++ backend keeps its last output of each kind (up to 32 MiB each) and
hands it out again once nothing of the caller's references it (no tensor, view or numpy array), so
a loop that drops its results pays no page faults either; ``release_buffers()`` frees those.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .. import validate
from ..dispatch import backend_for
from .reference import KL_ESTIMATORS

__all__ = ["gae", "masked_whiten", "shape_rewards", "ppo_advantages", "GAEOutput", "PPOAdvantages", "release_buffers"]


class GAEOutput(NamedTuple):
    advantages: torch.Tensor
    returns: torch.Tensor


class PPOAdvantages(NamedTuple):
    advantages: torch.Tensor  # [B, T], whitened over valid positions when whiten=True
    returns: torch.Tensor  # [B, T], value targets (advantages before whitening + values)
    kl: torch.Tensor  # [B] float32, sum of the per-token KL estimate over each row's valid positions


def _check_tokens(op: str, mask, **tensors: torch.Tensor) -> None:
    """Validate [B, T] float inputs and their bool mask; all must share shape and device."""
    # the common, valid case in one pass (a few us of a call that takes tens); else the named errors
    if isinstance(mask, torch.Tensor) and mask.dtype is torch.bool and mask.dim() == 2 and mask.numel() > 0:
        shape, device = mask.shape, mask.device
        if all(isinstance(x, torch.Tensor) and x.dtype in validate.FLOAT_DTYPES and x.shape == shape
               and x.device == device for x in tensors.values()):
            return
    for name, x in tensors.items():
        validate.tensor(op, name, x, ndim=2)
    validate.tensor(op, "mask", mask, ndim=2, dtypes=(torch.bool,), what="a bool mask")
    validate.same_layout(op, "mask", mask, **tensors)
    validate.nonempty(op, "mask", mask)


_SCORE_DTYPES = validate.FLOAT_DTYPES + (torch.float64,)


def _check_scores(op: str, scores, mask) -> None:
    if (isinstance(scores, torch.Tensor) and scores.dtype in _SCORE_DTYPES and scores.shape == mask.shape[:1]
            and scores.device == mask.device):
        return
    validate.tensor(op, "scores", scores, ndim=1, dtypes=_SCORE_DTYPES)
    validate.same_layout(op, "mask", mask, scores=scores)


def _contig(*xs: torch.Tensor):
    return tuple(x.contiguous() for x in xs)


def _nonfinite(checks: validate.Checks, flags, *names: str, scores: bool = False) -> validate.Checks:
    """Bit i of the kernels' flag word: ``names[i]`` is NaN/inf at a valid position of that row; with
    ``scores``, the next bit: the row's score is NaN/inf. ``flags`` None: no row flagged."""
    bits = [(n, validate.NONFINITE_AT_VALID) for n in names] + ([("scores", "NaN or inf")] if scores else [])
    checks.flags(flags, bits)  # the per-token "what" says that only valid positions count; scores always do
    return checks


def _out(op: str, out, mask: torch.Tensor, dtype: torch.dtype, **inputs: torch.Tensor):
    if out is not None:
        validate.outputs(op, out, mask, dtype, {"mask": mask, **inputs}, ("advantages", "returns"))
        return tuple(out)
    return None


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        gamma: float = 1.0, lam: float = 0.95, *, out=None) -> GAEOutput:
    """Generalised advantage estimation over the valid positions of each row.

    The recurrence runs over the positions where ``mask`` is true, in order, as if the masked ones
    were removed: a tool/observation span in the middle of a response and right padding are both
    skipped, and their rewards/values are ignored. The value after a row's last valid position is 0.

    Args:
        rewards: ``[B, T]`` per-token rewards (float32/bfloat16/float16).
        values: ``[B, T]`` value estimates, same shape and device.
        mask: ``[B, T]`` bool, true at valid positions.
        gamma: discount in [0, 1]. lam: GAE lambda in [0, 1].
        out: optional ``(advantages, returns)`` tensors to write into (contiguous ``[B, T]``, the
            result's dtype and device, not sharing memory with an input); they are returned.

    Returns:
        ``GAEOutput(advantages, returns)``, both ``[B, T]`` in the promoted dtype of rewards and
        values; ``returns = advantages + values`` at valid positions; both 0 at masked positions.
    """
    op = "gae"
    _check_tokens(op, mask, rewards=rewards, values=values)
    gamma = validate.number(op, "gamma", gamma, lo=0.0, hi=1.0)
    lam = validate.number(op, "lam", lam, lo=0.0, hi=1.0)
    out = _out(op, out, mask, torch.promote_types(rewards.dtype, values.dtype), rewards=rewards, values=values)
    adv, ret, flags = backend_for(mask.device, "advantages").gae(*_contig(rewards, values, mask), gamma, lam, out)
    _nonfinite(validate.Checks(op), flags, "rewards", "values").done()
    return GAEOutput(adv, ret)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to zero mean, unit variance over the valid positions of the whole batch.

    Mean and unbiased variance (as TRL does) are taken over every valid position of every row;
    with ``shift_mean=False`` the mean is added back. Masked positions are 0 on output. Needs at
    least two valid positions.
    """
    op = "masked_whiten"
    _check_tokens(op, mask, x=x)
    eps = validate.number(op, "eps", eps, lo=0.0)
    out, count, flags = backend_for(mask.device, "advantages").masked_whiten(*_contig(x, mask), bool(shift_mean), eps)
    checks = _nonfinite(validate.Checks(op), flags, "x")
    _count(checks, count)
    checks.done()
    return out


def _count(checks: validate.Checks, count: torch.Tensor) -> None:
    def fail():
        raise ValueError(f"{checks.op}: whitening needs at least 2 valid (mask=True) positions, got {int(count)}")
    checks.add(count < 2, fail)


def shape_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float, kl_estimator: str = "k1") -> torch.Tensor:
    """Per-token PPO rewards: ``-kl_coef * kl_t`` at valid positions, plus each row's sequence score
    at its last valid position.

    ``kl_estimator``: ``"k1"`` = logp - ref_logp; ``"k2"`` = (logp - ref_logp)^2 / 2;
    ``"k3"`` = r - 1 - log r with r = exp(ref_logp - logp). A row with no valid position gets no
    reward at all (its score has no token to land on).

    Returns ``[B, T]`` in the promoted dtype of the log-probs, 0 at masked positions.
    """
    op = "shape_rewards"
    _check_tokens(op, mask, logprobs=logprobs, ref_logprobs=ref_logprobs)
    _check_scores(op, scores, mask)
    kl_coef = validate.number(op, "kl_coef", kl_coef, lo=0.0)
    kl_estimator = validate.choice(op, "kl_estimator", kl_estimator, KL_ESTIMATORS)
    out, flags = backend_for(mask.device, "advantages").shape_rewards(
        *_contig(scores, logprobs, ref_logprobs, mask), kl_coef, kl_estimator)
    _nonfinite(validate.Checks(op), flags, "logprobs", "ref_logprobs", scores=True).done()
    return out


def ppo_advantages(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                   values: torch.Tensor, mask: torch.Tensor, *, kl_coef: float = 0.05,
                   kl_estimator: str = "k1", gamma: float = 1.0, lam: float = 0.95,
                   whiten: bool = True, eps: float = 1e-8, out=None) -> PPOAdvantages:
    """One fused pass: ``shape_rewards`` then ``gae`` (then ``masked_whiten`` of the advantages).

    Same semantics as calling the three ops in turn, but the per-token rewards never go through
    memory. Returns are computed before whitening (the value target), as TRL and verl do.

    ``out``: optional ``(advantages, returns)`` tensors to write into, as for ``gae``.

    Returns ``PPOAdvantages(advantages, returns, kl)``; ``kl`` is the per-row sum of the KL
    estimate over valid positions (for logging), float32 ``[B]``.
    """
    op = "ppo_advantages"
    _check_tokens(op, mask, logprobs=logprobs, ref_logprobs=ref_logprobs, values=values)
    _check_scores(op, scores, mask)
    kl_coef = validate.number(op, "kl_coef", kl_coef, lo=0.0)
    kl_estimator = validate.choice(op, "kl_estimator", kl_estimator, KL_ESTIMATORS)
    gamma = validate.number(op, "gamma", gamma, lo=0.0, hi=1.0)
    lam = validate.number(op, "lam", lam, lo=0.0, hi=1.0)
    eps = validate.number(op, "eps", eps, lo=0.0)
    dtype = torch.promote_types(torch.promote_types(logprobs.dtype, ref_logprobs.dtype), values.dtype)
    out = _out(op, out, mask, dtype, scores=scores, logprobs=logprobs, ref_logprobs=ref_logprobs, values=values)
    adv, ret, kl, count, flags = backend_for(mask.device, "advantages").ppo_advantages(
        *_contig(scores, logprobs, ref_logprobs, values, mask), kl_coef, kl_estimator, gamma, lam, bool(whiten), eps,
        out)
    checks = _nonfinite(validate.Checks(op), flags, "logprobs", "ref_logprobs", "values", scores=True)
    if whiten:
        _count(checks, count)
    checks.done()
    return PPOAdvantages(adv, ret, kl)


def release_buffers() -> None:
    """Free the output buffers the C++ backend keeps between calls (see the module docstring).

    Memory still referenced by the caller stays valid; nothing is compiled or loaded by this call."""
    from .. import extension
    if extension.loaded():
        extension.module().release_buffers()
