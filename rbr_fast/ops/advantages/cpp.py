"""The advantage ops on CPU tensors: thin wrappers over ``csrc/advantages.cpp`` in ``rbr_fast._C``."""
from __future__ import annotations

from .. import extension
from .reference import KL_ESTIMATORS

NAME = "cpp"


def gae(rewards, values, mask, gamma, lam, out=None):
    return tuple(extension.module().gae(rewards, values, mask, gamma, lam, *(out or (None, None))))


def masked_whiten(x, mask, shift_mean, eps):
    return tuple(extension.module().masked_whiten(x, mask, shift_mean, eps))


# the kernels take the KL estimator as its index in KL_ESTIMATORS
def shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, kl_estimator):
    return tuple(extension.module().shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef,
                                                  KL_ESTIMATORS.index(kl_estimator)))


def ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef, kl_estimator, gamma, lam, whiten, eps,
                   out=None):
    return tuple(extension.module().ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef,
                                                   KL_ESTIMATORS.index(kl_estimator), gamma, lam, whiten, eps,
                                                   *(out or (None, None))))
