"""The before/after judge of a PPO run: a policy's greedy answers to held-out prompts, scored by the
run's reward and, for XSTest prompts, by the keyword refusal judge (Not-Unsafe: unsafe prompts
refused; Not-Overrefuse: safe prompts answered)."""
from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Optional, Sequence

import torch

from .xstest import keyword_refusal


@dataclass
class HeldOutTally:
    """Sums over judged answers; processes add theirs up with ``from_tensor(all_sum(to_tensor()))``."""
    prompts: float = 0.0
    score: float = 0.0  # sum of the run's scores
    rbr: float = 0.0  # sum of the RBR reward
    unsafe: float = 0.0  # prompts labelled unsafe ...
    unsafe_refused: float = 0.0  # ... and of those, refused
    safe: float = 0.0  # prompts labelled safe ...
    safe_answered: float = 0.0  # ... and of those, not refused

    def add(self, labels: Sequence[Optional[str]], answers: Sequence[str], scores: torch.Tensor,
            rbr_mean: float = 0.0) -> None:
        """One batch: each prompt's label ("safe", "unsafe" or None), its answer, its score, and the
        batch's mean RBR reward."""
        self.prompts += len(answers)
        self.score += float(scores.sum())
        self.rbr += rbr_mean * len(answers)
        for label, text in zip(labels, answers):
            if label == "unsafe":
                self.unsafe += 1
                self.unsafe_refused += keyword_refusal(text)
            elif label == "safe":
                self.safe += 1
                self.safe_answered += not keyword_refusal(text)

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor(astuple(self), dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "HeldOutTally":
        return cls(*t.tolist())

    def summary(self, with_rbr: bool) -> dict:
        """Means: score (and RBR reward), and the keyword-judged rates where prompts had labels."""
        n = max(self.prompts, 1)
        out = {"prompts": int(self.prompts), "score": self.score / n}
        if with_rbr:
            out["rbr"] = self.rbr / n
        if self.unsafe:
            out["not_unsafe"] = self.unsafe_refused / self.unsafe
        if self.safe:
            out["not_overrefuse"] = self.safe_answered / self.safe
        return out

