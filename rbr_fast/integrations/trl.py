"""The RBR reward as a TRL reward function (``GRPOTrainer`` / ``RLOOTrainer`` ``reward_funcs``).

    from rbr_fast.integrations.trl import RBRReward, rbr_reward_async
    trainer = GRPOTrainer(model=..., reward_funcs=[RBRReward()], train_dataset=ds, ...)

TRL calls a reward function with keyword arguments ``prompts``, ``completions`` (plain strings or
chat messages), ``completion_ids`` and every other dataset column (one value per completion); the
column named by ``response_type_column`` (default ``"response_type"``) gives each prompt's response
type, and without it the type is inferred from the prompt. Per-proposition mean probabilities go to
TRL's ``log_metric`` as ``rbr/<proposition>``.

TRL runs ``async`` reward functions concurrently, but it detects them with
``inspect.iscoroutinefunction``, which is false for an object with an ``async __call__``: use the
module-level coroutine function ``rbr_reward_async`` (the default reward) or ``async_reward_func``.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Optional, Sequence

from ..reward import RewardWeights, RuleBasedReward


class RBRReward:
    """A picklable TRL reward function computing the RBR reward (+ nothing else: combine it with an
    RM in TRL's ``reward_funcs`` list and ``reward_weights``).

    Args:
        reward: a ready ``RuleBasedReward``; default: built on first call from ``model`` (a path for
            ``Grader.from_pretrained``; default the embedded SmolLM2) and ``weights`` (a weights
            JSON path; default hand-set). Only that recipe is pickled, never the model.
        response_type_column: the dataset column holding each prompt's response type.
    """

    __name__ = "rbr"

    def __init__(self, reward: Optional[RuleBasedReward] = None, *, model: Optional[str] = None,
                 weights: Optional[str] = None, response_type_column: str = "response_type", **grader_kwargs):
        self._reward = reward
        self._given = reward is not None  # a given reward pickles with its model; a recipe rebuilds
        self.model, self.weights, self.grader_kwargs = model, weights, grader_kwargs
        self.response_type_column = response_type_column
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        if not self._given:
            state["_reward"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def reward(self) -> RuleBasedReward:
        with self._lock:  # one load even when called from several threads at once
            if self._reward is None:
                from ..grading import Grader
                grader = (Grader.from_pretrained(self.model, **self.grader_kwargs) if self.model
                          else Grader.default(**self.grader_kwargs))
                w = RewardWeights.load(self.weights, grader.spec) if self.weights else None
                self._reward = RuleBasedReward(grader, weights=w)
            return self._reward

    def score_items(self, items: Sequence[tuple[Any, Any, Optional[str]]]) -> list[dict]:
        """``details`` of (prompt, completion, response type or None) items; the types are inferred
        unless every item has one. What every adapter and the server call."""
        prompts, completions, types = zip(*items) if items else ((), (), ())
        known = all(t is not None for t in types)
        return self.reward.details(list(prompts), list(completions), list(types) if known else None)

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs: Any) -> list[float]:
        types = kwargs.get(self.response_type_column) or [None] * len(prompts)
        details = self.score_items(list(zip(prompts, completions, types)))
        log_metric: Optional[Callable[[str, float], None]] = kwargs.get("log_metric")
        if callable(log_metric):
            for name, value in proposition_means(details).items():
                log_metric(name, value)
        return [d["reward"] for d in details]


def proposition_means(details: Sequence[dict]) -> dict[str, float]:
    """``{"rbr/<proposition>": mean P(yes)}`` over a batch of ``details`` (empty for no details)."""
    names = details[0]["propositions"] if details else ()
    return {f"rbr/{n}": sum(d["propositions"][n] for d in details) / len(details) for n in names}


def async_reward_func(func: RBRReward) -> Callable:
    """A coroutine function (what TRL's async path detects) running ``func`` in a worker thread."""
    async def rbr_async(prompts, completions, **kwargs):
        return await asyncio.to_thread(func, prompts, completions, **kwargs)
    rbr_async.__name__ = func.__name__ + "_async"
    return rbr_async


_default = RBRReward()


async def rbr_reward_async(prompts, completions, **kwargs) -> list[float]:
    """The default RBR reward (embedded grader, hand-set weights) for TRL's async reward path."""
    return await asyncio.to_thread(_default, prompts, completions, **kwargs)
