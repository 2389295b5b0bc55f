"""The RBR reward: features from grader probabilities, per-response-type weights, fitting."""
from ..grading import load_grader
from ..rules import LOW_CONFIDENCE, resolve_spec
from .fit import FitResult, fit_weights, ranked_pairs, split_by_group
from .rule_reward import (RuleBasedReward, default_weights, proposition_means, resolve_weights,
                          reward_metrics, answer_shares)
from .weights import CLASS_PRIOR, RewardWeights

__all__ = ["RuleBasedReward", "RewardWeights", "CLASS_PRIOR", "default_weights", "resolve_weights", "resolve_spec",
           "load_grader", "reward_metrics", "answer_shares", "LOW_CONFIDENCE",
           "proposition_means", "fit_weights", "FitResult", "ranked_pairs", "split_by_group"]
