"""One pooled reward per process and configuration, for the trainers that call a reward once per
sample (verl, OpenRLHF).

Those trainers load the adapter file by path into a fresh module, in every worker process and
possibly more than once per process, so the adapter files keep no state: the grader and its
``DynamicBatcher`` live here, in a real module, keyed by the configuration. Every call with the same
configuration in a process shares them, whichever copy of the adapter file makes it.

Configuration comes from the caller (verl's ``reward_kwargs``) over ``RBR_FAST_*`` environment
variables (OpenRLHF passes none) over the defaults.
"""
from __future__ import annotations

import math
import os
import threading
from typing import Any, NamedTuple

from .batching import DynamicBatcher
from .lazy_reward import LazyReward

# configuration key -> environment variable; the batching keys and memory_gib are numbers, the others strings
ENV = {"model": "RBR_FAST_MODEL", "grader_url": "RBR_FAST_GRADER_URL", "weights": "RBR_FAST_WEIGHTS", "spec": "RBR_FAST_SPEC",
       "device": "RBR_FAST_DEVICE", "dtype": "RBR_FAST_DTYPE", "memory_gib": "RBR_FAST_MEMORY_GIB",
       "policy_tokenizer": "RBR_FAST_POLICY_TOKENIZER",
       "max_batch": "RBR_FAST_MAX_BATCH", "max_wait_ms": "RBR_FAST_MAX_WAIT_MS", "reasoning": "RBR_FAST_REASONING"}
DEFAULTS = {"max_batch": 64, "max_wait_ms": 20.0, "dtype": "auto", "reasoning": "strip"}
_NUMBERS = {"max_batch": int, "max_wait_ms": float, "memory_gib": float}


class Pooled(NamedTuple):
    reward: LazyReward
    batcher: DynamicBatcher  # scores lists of (prompt, completion, response type or None) items


_pools: dict = {}
_lock = threading.Lock()


def options(kwargs: dict) -> dict:
    """The reward options among a trainer call's keyword arguments (the rest are the trainer's)."""
    return {k: v for k, v in kwargs.items() if k in ENV}


def config(**given: Any) -> dict:
    """The effective configuration: ``given`` (None entries ignored) over ``RBR_FAST_*`` over defaults."""
    out = dict(DEFAULTS)
    out.update({k: _NUMBERS.get(k, str)(os.environ[v]) for k, v in ENV.items() if os.environ.get(v)})
    out.update({k: v for k, v in given.items() if v is not None})
    unknown = set(out) - set(ENV)
    if unknown:
        raise TypeError(f"unknown rbr_fast reward option(s) {sorted(unknown)}; known: {sorted(ENV)}")
    return out


def check(cfg: dict) -> dict:
    """``cfg`` (from ``config``) checked as far as it can be without loading the grader: reasoning, the
    spec and weights files, the batching numbers; raises naming the bad option, else returns ``cfg``."""
    LazyReward(**{k: v for k, v in cfg.items() if k not in ("policy_tokenizer", "max_batch", "max_wait_ms")})
    for key, kinds, low in (("max_batch", int, 1), ("max_wait_ms", (int, float), 0)):
        x = cfg[key]
        if not isinstance(x, kinds) or isinstance(x, bool) or not low <= x < math.inf:
            raise ValueError(f"rbr_fast reward option {key}={x!r}: must be a{'n integer' if kinds is int else ' number'} "
                             f">= {low}")
    return cfg


def pooled(**given: Any) -> Pooled:
    """This process's pooled reward for the configuration (see ``config``), made on first use."""
    cfg = config(**given)
    own = {k: v for k, v in cfg.items() if k != "policy_tokenizer"}  # how the adapter reads text, not the reward
    key = tuple(sorted((k, repr(v)) for k, v in own.items()))
    with _lock:
        if key not in _pools:
            batching = {k: own.pop(k) for k in ("max_batch", "max_wait_ms")}
            reward = LazyReward(**own)
            _pools[key] = Pooled(reward, DynamicBatcher(reward.details, **batching))
        return _pools[key]


def loaded() -> int:
    """How many pooled rewards this process holds (one per distinct configuration)."""
    return len(_pools)
