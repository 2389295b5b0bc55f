"""The C++ CPU backend: thin wrappers over the ``rbr_fast._C`` extension.

The extension is normally built by ``setup.py``. If it is missing (a source checkout that was not
built), it is compiled on first use with ``torch.utils.cpp_extension.load`` (cached under
``TORCH_EXTENSIONS_DIR``); when that fails too, ``available()`` is false and the dispatcher falls
back to the reference backend with a one-line warning.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from .build_flags import cxx_flags
from .reference import KL_ESTIMATORS

NAME = "cpp"
CSRC = Path(__file__).resolve().parents[2] / "csrc"


@functools.lru_cache(maxsize=1)
def _load():
    """(module, None) or (None, reason)."""
    try:
        from rbr_fast import _C
        return _C, None
    except ImportError as e:
        prebuilt_error = str(e)
    sources = sorted(str(p) for p in CSRC.glob("*.cpp")) if CSRC.is_dir() else []
    if not sources:
        return None, f"the C++ extension is not built ({prebuilt_error}) and no csrc/ sources are beside the package"
    try:
        from torch.utils.cpp_extension import load
        return load(name="rbr_fast_C", sources=sources, extra_cflags=cxx_flags(), extra_ldflags=["-fopenmp"],
                    verbose=os.environ.get("RBR_FAST_VERBOSE_BUILD") == "1"), None
    except Exception as e:  # no compiler, missing headers, ...: degrade to the reference backend
        return None, (f"the C++ extension is not built and compiling it failed ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); build it with `pip install -e . --no-build-isolation`")


def available() -> bool:
    return _load()[0] is not None


def unavailable_reason() -> str:
    return _load()[1] or ""


def _C():
    return _load()[0]


def gae(rewards, values, mask, gamma, lam):
    return tuple(_C().gae(rewards, values, mask, gamma, lam))


def masked_whiten(x, mask, shift_mean, eps):
    return tuple(_C().masked_whiten(x, mask, shift_mean, eps))


def shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, kl_estimator):
    return tuple(_C().shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, KL_ESTIMATORS.index(kl_estimator)))


def ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef, kl_estimator, gamma, lam, whiten, eps):
    return tuple(_C().ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef,
                                     KL_ESTIMATORS.index(kl_estimator), gamma, lam, whiten, eps))


def yes_no_lse(logits, yes_ids, no_ids):
    return tuple(_C().yes_no_lse(logits, yes_ids, no_ids))


def label_logprobs(logits, labels, inv_temp, ignore_index):
    return tuple(_C().label_logprobs(logits, labels, inv_temp, ignore_index))


def label_logprobs_backward(grad, logits, labels, lse, inv_temp, ignore_index):
    return _C().label_logprobs_backward(grad, logits, labels, lse, inv_temp, ignore_index)


def rbr_reward(x, lit_idx, lit_neg, weights, rtype, bias):
    return tuple(_C().rbr_reward(x, lit_idx, lit_neg, weights, rtype, bias))


def skinny_linear(x, weight, bias):
    return _C().skinny_linear(x, weight, bias)
