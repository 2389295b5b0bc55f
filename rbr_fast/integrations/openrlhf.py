"""The RBR reward as an OpenRLHF reward function file (``--reward.remote_url`` pointing at this
file's path, OpenRLHF's "reward_func" convention).

OpenRLHF calls ``reward_func(queries, prompts, labels, **kwargs)`` with the full texts (prompt +
response), the prompt texts and the dataset labels; the response is the query with its prompt
removed. A label that names a response type (e.g. ``hard_refuse``, ``Comply``) is used as such;
otherwise the type is inferred from the prompt. Returns ``{"rewards", "scores", "extra_logs"}``
with rewards as float tensors and per-proposition mean probabilities in ``extra_logs``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .trl import RBRReward

_reward = RBRReward()


def configure(reward: RBRReward) -> None:
    global _reward
    _reward = reward


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Optional[Sequence[Any]] = None,
                **kwargs: Any) -> dict:
    responses = [q[len(p):] if q.startswith(p) else q for q, p in zip(queries, prompts)]
    spec = _reward.reward.spec
    types = None
    if labels is not None and all(isinstance(x, str) for x in labels):
        try:
            types = [spec.response_type(x).name for x in labels]
        except KeyError:
            types = None  # labels mean something else here: infer the types
    details = _reward.reward.details(list(prompts), responses, types)
    rewards = torch.tensor([d["reward"] for d in details], dtype=torch.float32)
    logs = {f"rbr/{k}": torch.tensor(sum(d["propositions"][k] for d in details) / max(len(details), 1))
            for k in (details[0]["propositions"] if details else ())}
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": logs}
