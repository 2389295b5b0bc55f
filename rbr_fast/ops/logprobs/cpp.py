"""The log-prob kernels on CPU tensors: thin wrappers over ``csrc/logprobs.cpp`` in ``rbr_fast._C``."""
from __future__ import annotations

from .. import extension

NAME = "cpp"


def yes_no_lse(logits, yes_ids, no_ids):
    return tuple(extension.module().yes_no_lse(logits, yes_ids, no_ids))


def label_logprobs(logits, labels, inv_temp, ignore_index):
    return tuple(extension.module().label_logprobs(logits, labels, inv_temp, ignore_index))


def label_logprobs_backward(grad, logits, labels, lse, inv_temp, ignore_index):
    return extension.module().label_logprobs_backward(grad, logits, labels, lse, inv_temp, ignore_index)
