"""rbr_fast: fast kernels for Rule Based Rewards (RBR) in RLHF safety training."""
from . import ops
from .alloc import tune_malloc
from .grading import Grader, Grades
from .ops import (YesNo, fused_linear_token_logprobs, fused_linear_yes_no, gae, masked_whiten, ppo_advantages,
                  rbr_reward, rbr_reward_from_props, shape_rewards, token_logprobs, yes_no_logprobs)
from .reward import RewardWeights, RuleBasedReward, fit_weights
from .rules import RuleSpec, SpecError

__version__ = "0.1.0"
__all__ = ["ops", "gae", "masked_whiten", "shape_rewards", "ppo_advantages", "yes_no_logprobs", "fused_linear_yes_no",
           "token_logprobs", "fused_linear_token_logprobs", "YesNo", "rbr_reward", "rbr_reward_from_props",
           "RuleSpec", "SpecError", "Grader", "Grades", "RuleBasedReward", "RewardWeights", "fit_weights",
           "tune_malloc", "__version__"]
