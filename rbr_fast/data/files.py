"""Where the shipped data files are: inside the package, or under ``$RBR_FAST_DATA``."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

ENV = "RBR_FAST_DATA"


def root() -> Path:
    """The data folder: ``$RBR_FAST_DATA`` when set, else the one inside the package."""
    override = os.environ.get(ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"${ENV}={override}: no such folder")
        return path
    return Path(str(resources.files(__package__)))


def gold() -> Path:
    """The RBR gold set (jsonl)."""
    return root() / "rbr_gold" / "train.jsonl"


def xstest() -> Path:
    """The XSTest folder (``xstest_prompts.csv`` and ``completions_<model>.csv``)."""
    return root() / "xstest"


def written_rare(split: str = "train") -> Path:
    """Replies written for the rare propositions (``split``: "train", or "test" for evaluation only)."""
    return root() / "written" / f"rare_{split}.jsonl"


def written_prompts() -> Path:
    """User requests written with their response type (jsonl)."""
    return root() / "written" / "prompts.jsonl"


def written_heldout() -> Path:
    """Safe and unsafe requests written for evaluation only (jsonl; never train or tune on them)."""
    return root() / "written" / "heldout_prompts.jsonl"
