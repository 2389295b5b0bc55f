"""A minimal PPO trainer whose hot paths are this package's kernels (see ``trainer.py``).

    python -m rbr_fast.ppo --config ppo.yaml [--field value ...] [--resume]
    torchrun --nproc_per_node 2 -m rbr_fast.ppo --config ppo.yaml      # one process per device / core group
"""
from .config import PPOConfig
from .trainer import PHASES, PPOTrainer, train

__all__ = ["PPOConfig", "PPOTrainer", "train", "PHASES"]
