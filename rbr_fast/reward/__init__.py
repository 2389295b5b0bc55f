"""The RBR reward: features from grader probabilities, per-response-type weights, fitting."""
from .fit import FitResult, fit_weights, ranked_pairs, split_by_group
from .rule_reward import DEFAULT_WEIGHTS, RuleBasedReward, proposition_means, resolve_weights
from .weights import CLASS_PRIOR, RewardWeights

__all__ = ["RuleBasedReward", "RewardWeights", "CLASS_PRIOR", "DEFAULT_WEIGHTS", "resolve_weights",
           "proposition_means", "fit_weights", "FitResult", "ranked_pairs", "split_by_group"]
