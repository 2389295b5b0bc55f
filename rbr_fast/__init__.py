"""rbr_fast: fast kernels for Rule Based Rewards (RBR) in RLHF safety training."""
from . import ops
from .alloc import tune_malloc
from .grading import Grader, Grades
from .rules import RuleSpec, SpecError
from .ops import (YesNo, fused_linear_token_logprobs, fused_linear_yes_no, gae, masked_whiten, ppo_advantages,
                  shape_rewards, token_logprobs, yes_no_logprobs)

__version__ = "0.1.0"
__all__ = ["ops", "gae", "masked_whiten", "shape_rewards", "ppo_advantages", "yes_no_logprobs", "fused_linear_yes_no",
           "token_logprobs", "fused_linear_token_logprobs", "YesNo", "RuleSpec", "SpecError", "Grader", "Grades", "tune_malloc",
           "__version__"]
