"""The RBR reward kernel on CPU tensors: a thin wrapper over ``csrc/reward.cpp`` in ``rbr_fast._C``."""
from __future__ import annotations

from .. import extension

NAME = "cpp"


def rbr_reward(x, lit_idx, lit_neg, weights, rtype, bias):
    return tuple(extension.module().rbr_reward(x, lit_idx, lit_neg, weights, rtype, bias))
