"""rbr_fast.bench: benchmarks of our ops against peer implementations (``python -m rbr_fast.bench``).

Cases live in a registry (``CASES``); a module of cases registers them on import. To benchmark a new
op, write its cases in a module here with ``register(Case(...), *targets)`` and import it below.
"""
from . import advantages_cases, decode_cases, grading, logprobs_cases, reward_cases  # noqa: F401  (registers them)
from .harness import CASES, TARGETS, Case, Options, Peer, Skip, Target, register, run

__all__ = ["CASES", "TARGETS", "Case", "Options", "Peer", "Skip", "Target", "register", "run"]
