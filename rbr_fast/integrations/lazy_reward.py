"""``LazyReward``: the reward every adapter and server scores with, built on first use from a recipe.

Trainers pickle reward functions into other processes (TRL's async GRPO worker, Ray actors), so
an adapter holds the recipe (grader model, weights, spec, grader options) and builds the
``RuleBasedReward`` in the process that first scores. The spec and weights are resolved at once
(cheap, and a wrong weights file fails where it is given); the model loads on first use.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..grading import memory
from ..grading.grader import served_grader_url
from ..reward import RuleBasedReward, resolve_spec, resolve_weights
from ..reward.rule_reward import WeightsLike
from ..rules import RuleSpec
from . import node_graders
from .items import answer_only, check_reasoning
from .placement import check_placement

# (prompt, completion, response type or None): what the adapters score; None means inferred
Item = tuple


class LazyReward:
    """Args:
        reward: a ready ``RuleBasedReward`` (then pickled with its model).
        model: grader model for ``Grader.from_pretrained`` (a folder or hub id); default the embedded
            SmolLM2.
        weights: ``RewardWeights``, "hand", "xstest" or a weights file (default: ``default_weights(spec)``).
        spec: a ``RuleSpec`` or a spec YAML path (default: the shipped spec).
        reasoning: "strip" (default): the grader judges the answer, without a reasoning model's
            leading ``<think>`` block (``items.answer_only``); "keep": the completion as given.
        grader_kwargs: for ``Grader.from_pretrained`` / ``Grader.default`` (``revision``, ``token``,
            ``dtype``, ``device``, ``memory_gib``, ``gguf_file``, ``token_budget``, ...).
    """

    def __init__(self, reward: Optional[RuleBasedReward] = None, *, model: Optional[str] = None,
                 weights: WeightsLike = None, spec: Union[RuleSpec, str, Path, None] = None, reasoning: str = "strip",
                 **grader_kwargs: Any):
        self.reasoning = check_reasoning(reasoning)
        self._reward = reward
        self._given = reward is not None
        if reward is not None:
            self.spec, self.weights = reward.spec, reward.weights
        else:
            self.spec = resolve_spec(spec)
            self.weights = resolve_weights(weights, self.spec)
        if grader_kwargs.get("memory_gib") is not None:
            memory.check_cap(grader_kwargs["memory_gib"])
        self.model, self.grader_kwargs = model, grader_kwargs
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        if not self._given:
            state["_reward"] = None  # rebuilt from the recipe where it is unpickled
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def reward(self) -> RuleBasedReward:
        """The reward, loaded once per process even when several threads ask at once, after
        ``placement.check_placement`` (a CUDA device this process cannot use fails in one line);
        another process of this node holding a grader already is logged (``node_graders``)."""
        with self._lock:
            if self._reward is None:
                kw = self.grader_kwargs
                check_placement(self.model, kw.get("device"), kw.get("dtype") or "auto", kw.get("gguf_file"),
                                kw.get("memory_gib"))
                self._reward = RuleBasedReward.load(self.model, weights=self.weights, spec=self.spec,
                                                    **self.grader_kwargs)
                if served_grader_url(self.model) is None:  # a served grader holds no model here
                    node_graders.register(self.model, self.grader_kwargs.get("device"))
            return self._reward

    def details(self, items: Sequence[Item]) -> list[dict]:
        """``RuleBasedReward.details`` of (prompt, completion, response type or None) items: a given
        type is kept and only the missing ones are inferred, whatever else shares the batch. With
        ``reasoning="strip"`` the completions are graded through ``items.answer_only``."""
        if not items:
            return []
        prompts, completions, types = zip(*items)
        if self.reasoning == "strip":
            completions = [answer_only(c) for c in completions]
        return self.reward.details(list(prompts), list(completions), list(types))
