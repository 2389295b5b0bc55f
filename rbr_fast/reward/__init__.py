"""The RBR reward: features from grader probabilities, per-response-type weights, fitting."""
from .fit import FitResult, fit_weights, ranked_pairs, split_by_group
from .rule_reward import RuleBasedReward, default_weights, proposition_means, resolve_weights
from .weights import CLASS_PRIOR, RewardWeights

__all__ = ["RuleBasedReward", "RewardWeights", "CLASS_PRIOR", "default_weights", "resolve_weights",
           "proposition_means", "fit_weights", "FitResult", "ranked_pairs", "split_by_group"]
