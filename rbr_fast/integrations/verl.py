"""The RBR reward as a verl custom reward function.

    reward.custom_reward_function.path=<site-packages>/rbr_fast/integrations/verl.py
    reward.custom_reward_function.name=compute_score

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)`` once
per sample, from several threads at once in its parallel reward managers. Each call here is
pooled with the concurrent ones into one grader batch (``MicroBatcher``: at most
``RBR_FAST_VERL_MAX_BATCH`` samples, 64 by default, waiting at most ``RBR_FAST_VERL_MAX_WAIT_MS``,
20 by default). The prompt comes from ``extra_info["prompt"]`` (a string or chat messages: put it
there in the data preprocessing), the response type from ``extra_info["response_type"]`` (else
inferred from the prompt). Returns ``{"score": reward, "rbr/<proposition>": P(yes), ...}``.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Optional

from .batching import MicroBatcher
from .trl import RBRReward

_lock = threading.Lock()
_batcher: Optional[MicroBatcher] = None
_reward = RBRReward()  # the default reward; replace with configure()


def configure(reward: RBRReward, max_batch: Optional[int] = None, max_wait_ms: Optional[float] = None) -> None:
    """Use ``reward`` (and batching limits) for the following calls."""
    global _reward, _batcher
    with _lock:
        _reward = reward
        _batcher = MicroBatcher(_score_batch, max_batch or int(os.environ.get("RBR_FAST_VERL_MAX_BATCH", 64)),
                                max_wait_ms if max_wait_ms is not None else
                                float(os.environ.get("RBR_FAST_VERL_MAX_WAIT_MS", 20)))


def _score_batch(items: list[tuple[Any, str, Optional[str]]]) -> list[dict]:
    return [{"score": d["reward"], **{f"rbr/{k}": v for k, v in d["propositions"].items()}}
            for d in _reward.score_items(items)]


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Optional[dict] = None,
                  **kwargs: Any) -> dict:
    """verl's per-sample reward call (see the module docstring)."""
    if not isinstance(extra_info, dict) or "prompt" not in extra_info:
        raise ValueError("rbr_fast verl reward: put the prompt in extra_info['prompt'] when preprocessing the data")
    if _batcher is None:
        configure(_reward)
    return _batcher((extra_info["prompt"], solution_str, extra_info.get("response_type")))
