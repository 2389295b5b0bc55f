"""rbr_fast.bench: benchmarks of our ops against peer implementations (``python -m rbr_fast.bench``).

Cases live in a registry (``CASES``); a module of cases registers them on import. To benchmark a new
op, write its cases in a module here with ``register(Case(...), *targets)`` and import it below.
"""
from . import advantages, decode, grading, logprobs, reward  # noqa: F401  (register their cases)
from .harness import CASES, TARGETS, Case, Options, Peer, Skip, Target, register, run

__all__ = ["CASES", "TARGETS", "Case", "Options", "Peer", "Skip", "Target", "register", "run"]
