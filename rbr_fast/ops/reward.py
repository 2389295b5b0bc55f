"""Public RBR reward ops: the batched feature-weight reward, and the fused path from proposition
probabilities (class probabilities computed in the kernel from the spec's literals) to reward.

reward[n] = bias[t] + features[n] . weights[t], with t = response_type[n]: one weight vector per
response type, so a completion is scored by its own type's weights (other types' class features
simply get weight 0 there).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from . import validate as v
from .dispatch import backend_for


class Conjunctions(NamedTuple):
    """J conjunctions appended to P input columns, in order. Row j lists its literals as column
    indices into the growing feature row (an input column, or an earlier conjunction at P + j'),
    -1 for unused slots; ``neg`` marks literals that take 1 - value."""
    idx: torch.Tensor  # [J, L] int32
    neg: torch.Tensor  # [J, L] bool


class RewardOutput(NamedTuple):
    reward: torch.Tensor  # [N] float32
    features: torch.Tensor  # [N, P + J] float32: the inputs, then each conjunction's probability


_FLOATS = v.FLOAT_DTYPES + (torch.float64,)


def _check(op: str, x: torch.Tensor, weights: torch.Tensor, response_type: torch.Tensor,
           bias: Optional[torch.Tensor], n_features: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    v.tensor(op, name, x, ndim=2, dtypes=_FLOATS)
    v.tensor(op, "weights", weights, ndim=2, dtypes=_FLOATS)
    v.tensor(op, "response_type", response_type, ndim=1, dtypes=(torch.int64, torch.int32), what="an integer tensor")
    if x.shape[0] == 0:
        raise ValueError(f"{op}: `{name}` is empty (shape {tuple(x.shape)}); an empty batch has no reward")
    if weights.shape[1] != n_features:
        raise ValueError(f"{op}: `weights` must have {n_features} columns (one per feature), got shape "
                         f"{tuple(weights.shape)}")
    v.same_layout(op, name, x, response_type=response_type)
    for other, t in (("weights", weights),) + ((("bias", bias),) if bias is not None else ()):
        if t.device != x.device:
            raise ValueError(f"{op}: `{other}` is on {t.device} but `{name}` is on {x.device}; move them to one device")
    K = weights.shape[0]
    lo, hi = int(response_type.min()), int(response_type.max())
    if lo < 0 or hi >= K:
        raise ValueError(f"{op}: `response_type` holds {lo if lo < 0 else hi}, outside [0, {K}) (one row of "
                         "`weights` per response type)")
    v.finite_tensor(op, "weights", weights)
    if bias is None:
        bias = torch.zeros(K, dtype=torch.float32, device=x.device)
    else:
        v.tensor(op, "bias", bias, ndim=1, dtypes=_FLOATS)
        if bias.shape[0] != K:
            raise ValueError(f"{op}: `bias` must have shape ({K},) (one per response type), got {tuple(bias.shape)}")
        v.finite_tensor(op, "bias", bias)
    return weights.float().contiguous(), bias.float().contiguous()


def _raise(op: str, name: str, flags: torch.Tensor, bits: int) -> None:
    bad = (flags & bits) != 0
    if bool(bad.any()):
        row = int(torch.nonzero(bad).flatten()[0])
        what = "NaN or inf" if int(flags[row]) & 1 else "a value outside [0, 1]"
        raise ValueError(f"{op}: `{name}` contains {what}, first in row {row}")


_NO_CONJUNCTIONS = {}


def _empty(device: torch.device) -> Conjunctions:
    if device not in _NO_CONJUNCTIONS:
        _NO_CONJUNCTIONS[device] = Conjunctions(torch.full((0, 1), -1, dtype=torch.int32, device=device),
                                                torch.zeros(0, 1, dtype=torch.bool, device=device))
    return _NO_CONJUNCTIONS[device]


def rbr_reward(features: torch.Tensor, weights: torch.Tensor, response_type: torch.Tensor,
               bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Batched linear RBR reward: ``bias[t] + features[n] . weights[t]`` with ``t = response_type[n]``.

    Args:
        features: ``[N, F]`` float (any values; NaN/inf raise).
        weights: ``[K, F]``, one row per response type.
        response_type: ``[N]`` integer in ``[0, K)``.
        bias: optional ``[K]``.
    Returns: ``[N]`` float32.
    """
    op = "rbr_reward"
    w, b = _check(op, features, weights, response_type, bias, features.shape[1] if features.dim() == 2 else 0,
                  "features")
    empty = _empty(features.device)
    reward, _, flags = backend_for(features.device).rbr_reward(features.float().contiguous(), empty.idx, empty.neg,
                                                               w, response_type.long().contiguous(), b)
    _raise(op, "features", flags, 1)
    return reward


def rbr_reward_from_props(props: torch.Tensor, conjunctions: Conjunctions, weights: torch.Tensor,
                          response_type: torch.Tensor, bias: Optional[torch.Tensor] = None) -> RewardOutput:
    """Fused: proposition probabilities -> conjunction (class) probabilities -> reward, in one kernel.

    Each conjunction's probability is the product of its literals' probabilities (p, or 1 - p when
    negated): this treats the propositions as independent given the completion, the assumption the
    RBR paper's class probabilities make. ``RuleSpec.conjunctions()`` builds the table of a spec.

    Args:
        props: ``[N, P]`` probabilities in [0, 1] (outside, NaN or inf raise).
        conjunctions: the J conjunctions (see ``Conjunctions``), on ``props``'s device.
        weights: ``[K, P + J]``; response_type ``[N]`` in ``[0, K)``; bias optional ``[K]``.
    Returns: ``RewardOutput(reward [N], features [N, P + J])``.
    """
    op = "rbr_reward_from_props"
    if not isinstance(conjunctions, Conjunctions):
        raise TypeError(f"{op}: `conjunctions` must be a Conjunctions(idx, neg), got {type(conjunctions).__name__}")
    idx, neg = conjunctions
    v.tensor(op, "conjunctions.idx", idx, ndim=2, dtypes=(torch.int32,), what="an int32 tensor")
    v.tensor(op, "conjunctions.neg", neg, ndim=2, dtypes=(torch.bool,), what="a bool tensor")
    if neg.shape != idx.shape:
        raise ValueError(f"{op}: conjunctions.idx {tuple(idx.shape)} and .neg {tuple(neg.shape)} differ in shape")
    P = props.shape[1] if props.dim() == 2 else 0
    w, b = _check(op, props, weights, response_type, bias, P + idx.shape[0], "props")
    if idx.device != props.device or neg.device != props.device:
        raise ValueError(f"{op}: `conjunctions` are on {idx.device} / {neg.device} but `props` is on {props.device}")
    if idx.numel():
        # literal j may only name an input or an earlier conjunction: rules out cycles and bad indices
        limit = P + torch.arange(idx.shape[0], device=idx.device)[:, None]
        if bool(((idx < -1) | (idx >= limit)).any()):
            raise ValueError(f"{op}: conjunction literals must index an input column or an earlier conjunction")
    reward, feats, flags = backend_for(props.device).rbr_reward(props.float().contiguous(), idx.contiguous(),
                                                                neg.contiguous(), w,
                                                                response_type.long().contiguous(), b)
    _raise(op, "props", flags, 3)
    return RewardOutput(reward, feats)
