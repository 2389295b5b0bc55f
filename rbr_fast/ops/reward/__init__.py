"""Public RBR reward ops: the batched feature-weight reward, and the fused path from proposition
probabilities (class probabilities computed in the kernel from the spec's literals) to reward.

reward[n] = bias[t] + features[n] . weights[t], with t = response_type[n]: one weight vector per
response type, so a completion is scored by its own type's weights (other types' class features
simply get weight 0 there). The kernel runs on the backend chosen by ``rbr_fast.ops.dispatch``:
``reference.py`` (the definition and the kernel contract), ``cpp.py`` (over ``csrc/reward.cpp``)
or ``triton.py``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .. import validate
from ..dispatch import backend_for

__all__ = ["rbr_reward", "rbr_reward_from_props", "Conjunctions", "RewardOutput"]


class Conjunctions(NamedTuple):
    """J conjunctions appended to P input columns, in order. Row j lists its literals as column
    indices into the growing feature row (an input column, or an earlier conjunction at P + j'),
    -1 for unused slots; ``neg`` marks literals that take 1 - value."""
    idx: torch.Tensor  # [J, L] int32
    neg: torch.Tensor  # [J, L] bool


class RewardOutput(NamedTuple):
    reward: torch.Tensor  # [N] float32
    features: torch.Tensor  # [N, P + J] float32: the inputs, then each conjunction's probability


_FLOATS = validate.FLOAT_DTYPES + (torch.float64,)


def _check(op: str, x: torch.Tensor, weights: torch.Tensor, response_type: torch.Tensor,
           bias: Optional[torch.Tensor], n_features: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    validate.tensor(op, name, x, ndim=2, dtypes=_FLOATS)
    validate.tensor(op, "weights", weights, ndim=2, dtypes=_FLOATS)
    validate.tensor(op, "response_type", response_type, ndim=1, dtypes=(torch.int64, torch.int32),
                    what="an integer tensor")
    if x.shape[0] == 0:
        raise ValueError(f"{op}: `{name}` is empty (shape {tuple(x.shape)}); an empty batch has no reward")
    if weights.shape[1] != n_features:
        raise ValueError(f"{op}: `weights` must have {n_features} columns (one per feature), got shape "
                         f"{tuple(weights.shape)}")
    validate.same_layout(op, name, x, response_type=response_type)
    for other, t in (("weights", weights),) + ((("bias", bias),) if bias is not None else ()):
        if t.device != x.device:
            raise ValueError(f"{op}: `{other}` is on {t.device} but `{name}` is on {x.device}; move them to one device")
    K = weights.shape[0]
    lo, hi = int(response_type.min()), int(response_type.max())
    if lo < 0 or hi >= K:
        raise ValueError(f"{op}: `response_type` holds {lo if lo < 0 else hi}, outside [0, {K}) (one row of "
                         "`weights` per response type)")
    validate.finite_tensor(op, "weights", weights)
    if bias is None:
        bias = torch.zeros(K, dtype=torch.float32, device=x.device)
    else:
        validate.tensor(op, "bias", bias, ndim=1, dtypes=_FLOATS)
        if bias.shape[0] != K:
            raise ValueError(f"{op}: `bias` must have shape ({K},) (one per response type), got {tuple(bias.shape)}")
        validate.finite_tensor(op, "bias", bias)
    return weights.float().contiguous(), bias.float().contiguous()


# the kernel's flag bits: 0 a non-finite input, 1 an input outside [0, 1]
_NONFINITE, _OUTSIDE_01 = "NaN or inf", "a value outside [0, 1]"


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
    reward, _, flags = backend_for(features.device, "reward").rbr_reward(
        features.float().contiguous(), empty.idx, empty.neg, w, response_type.long().contiguous(), b)
    # features may hold any finite value: bit 1 (outside [0, 1]) is not an error here
    validate.raise_on_flags(op, flags, [("features", _NONFINITE)])
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
    validate.tensor(op, "conjunctions.idx", idx, ndim=2, dtypes=(torch.int32,), what="an int32 tensor")
    validate.tensor(op, "conjunctions.neg", neg, ndim=2, dtypes=(torch.bool,), what="a bool tensor")
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
    reward, feats, flags = backend_for(props.device, "reward").rbr_reward(
        props.float().contiguous(), idx.contiguous(), neg.contiguous(), w, response_type.long().contiguous(), b)
    validate.raise_on_flags(op, flags, [("props", _NONFINITE), ("props", _OUTSIDE_01)])
    return RewardOutput(reward, feats)
