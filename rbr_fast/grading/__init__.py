"""The LLM grader: rule-spec propositions -> P(yes) per completion, with shared-prefix packing."""
from .embedded import ModelUnavailable
from .grader import Grader, Grades, load_grader, resolve_dtype

__all__ = ["Grader", "Grades", "ModelUnavailable", "load_grader", "resolve_dtype"]
