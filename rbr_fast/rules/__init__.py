"""Rule specs for RBR: propositions the grader answers, response types and their quality classes."""
from .spec import (ANSWERED_BY, DEFAULT_SPEC, LOW_CONFIDENCE, QUALITY_ORDER, Example, Literal, Proposition, QualityClass,
                   ResponseType, RuleSpec, SpecError, resolve_spec)

__all__ = ["RuleSpec", "SpecError", "Proposition", "Example", "Literal", "QualityClass", "ResponseType",
           "QUALITY_ORDER", "DEFAULT_SPEC", "LOW_CONFIDENCE", "ANSWERED_BY", "resolve_spec"]
