"""The sequence score PPO maximises: RBR reward (grader + weights) plus an optional reward model."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ..grading import Grader
from ..reward import RewardWeights, RuleBasedReward, reward_metrics
from .config import PPOConfig
from ..data.prompts import Prompt
from .models import load_reward_model, reward_model_scores
from .rollout import Rollout


class SequenceScore:
    """``scores(prompts, texts, rollout) -> ([B] float32, metrics)``.

    Args:
        grader: the RBR grader (None when ``cfg.rbr`` is off); its model may be the frozen reference.
        weights: the RBR weights for the grader's spec (None when ``cfg.rbr`` is off).
        reward_fn: any callable ``(prompts, completions) -> list[float]`` used as the helpful-only
            reward model instead of ``cfg.reward_model`` (weighted by ``cfg.rm_coef``).
    """

    def __init__(self, cfg: PPOConfig, grader: Optional[Grader], weights: Optional[RewardWeights], device: torch.device,
                 reward_fn: Optional[Callable[[list, list], Sequence[float]]] = None):
        self.cfg = cfg
        self.reward_fn = reward_fn
        self.rbr = None
        if cfg.rbr:
            self.rbr = RuleBasedReward(grader, weights=weights)
        self.rm = load_reward_model(cfg.reward_model, device) if cfg.reward_model else None

    def __call__(self, prompts: Sequence[Prompt], texts: Sequence[str], rollout: Rollout):
        score = torch.zeros(len(texts), dtype=torch.float32)
        metrics: dict = {}
        if self.rbr is not None:
            details = self.rbr.details([p.prompt for p in prompts], list(texts), [p.response_type for p in prompts])
            rbr = torch.tensor([d["rbr"] for d in details], dtype=torch.float32)
            score += self.cfg.rbr_coef * rbr
            metrics["rbr"] = float(rbr.mean())
            metrics.update(reward_metrics(details))
        rm = None
        if self.reward_fn is not None:
            rm = torch.as_tensor(self.reward_fn([p.prompt for p in prompts], list(texts)), dtype=torch.float32)
            if rm.shape != (len(texts),) or not bool(torch.isfinite(rm).all()):
                raise ValueError(f"reward_fn must return {len(texts)} finite numbers, got {rm.tolist()}")
        elif self.rm is not None:
            rm = reward_model_scores(self.rm, rollout.ids, rollout.attn).cpu()
        if rm is not None:
            score += self.cfg.rm_coef * rm
            metrics["rm"] = float(rm.mean())
        if self.cfg.missing_eos_penalty is not None:
            score -= self.cfg.missing_eos_penalty * (~rollout.ended).float().cpu()
        return score.to(rollout.ids.device), metrics
