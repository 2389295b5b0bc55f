"""Grades kept on disk by key, so long grading runs resume where they stopped: each chunk is
appended (and flushed) as soon as it is graded, and a rerun grades only the missing keys."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from .grader import Grader, Grades


def grade_cached(grader: Grader, keys: Sequence[str], conversations: Sequence, completions: Sequence,
                 path: Path, chunk: int = 16) -> Grades:
    """``grader.grade`` over all items, reusing and extending the jsonl cache at ``path`` (one
    line per key: ``{"key", "grader", "p_yes": {name: p}, "mass": {...}}``). Entries made by another
    grader (``Grader.fingerprint``: model, dtype, layout, spec) are ignored."""
    names = grader.spec.proposition_names
    who = grader.fingerprint()
    have: dict[str, tuple[list[float], list[float]]] = {}
    path = Path(path)
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                if row["grader"] != who:
                    continue
                have[row["key"]] = ([row["p_yes"][n] for n in names], [row["mass"][n] for n in names])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a killed run, or another spec's entry
    todo = [i for i, k in enumerate(keys) if k not in have]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            f.write("\n")  # end a torn line so that new entries parse
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            out = grader.grade([conversations[i] for i in part], [completions[i] for i in part])
            for j, i in enumerate(part):
                have[keys[i]] = (out.p_yes[j].tolist(), out.mass[j].tolist())
                f.write(json.dumps({"key": keys[i], "grader": who, "p_yes": dict(zip(names, have[keys[i]][0])),
                                    "mass": dict(zip(names, have[keys[i]][1]))}) + "\n")
            f.flush()
    p_yes = torch.tensor([have[k][0] for k in keys], dtype=torch.float32).reshape(len(keys), len(names))
    mass = torch.tensor([have[k][1] for k in keys], dtype=torch.float32).reshape(len(keys), len(names))
    return Grades(p_yes, mass, names)
