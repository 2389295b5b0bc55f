"""rbr_fast: fast kernels for Rule Based Rewards (RBR) in RLHF safety training."""
from . import ops
from .alloc import tune_malloc
from .ops import gae, masked_whiten, ppo_advantages, shape_rewards

__version__ = "0.1.0"
__all__ = ["ops", "gae", "masked_whiten", "shape_rewards", "ppo_advantages", "tune_malloc", "__version__"]
