"""Data shipped inside the package, so that every command works from a wheel or a bare clone.

- ``rbr_gold/train.jsonl``: the RBR gold set (Mu et al. 2024): 351 conversations with a completion,
  its response type and 23 human-labelled propositions. MIT licence, (c) 2024 OpenAI
  (``rbr_gold/LICENSE``).
- ``xstest/``: XSTest (Röttger et al. 2024): 450 prompts (250 safe, 200 unsafe) and the completions
  of three models (gpt4, llama2orig, mistralinstruct) with human labels. CC-BY-4.0
  (``xstest/LICENSE``).

- ``written/``: rows and prompts written for rbr_fast by its developers (CC0 1.0, ``written/LICENSE``):
  ``rare_train.jsonl`` / ``rare_test.jsonl``, replies labelled for the four rare propositions
  (insults, threats, resources, doses; the test file is for evaluation only), and ``prompts.jsonl``,
  user requests labelled with their response type.

Files are found through ``importlib.resources``. ``$RBR_FAST_DATA`` names another folder with the
same layout (``rbr_gold/train.jsonl``, ``xstest/...``); commands also take ``--data``.
"""
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
    return Path(str(resources.files(__name__)))


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
