"""Pooled hidden-state features on disk, so that a head refit takes seconds and a killed extraction
resumes: chunk files under ``root/<grader features fingerprint>/layers-<l1-l2-...>/``, each holding
the content keys and features of up to ``chunk`` rows, written atomically as soon as they are done."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Sequence

import torch

from ..io import atomic_write
from .features import POOLINGS
from ..data.labelled import content_key


class FeatureCache:
    """Args:
        root: cache folder (e.g. ``$RBR_FAST_CACHE/features``).
        grader: the ``Grader`` whose ``features`` fill it.
        layers: decoder layers (1-based) to keep.
    """

    def __init__(self, root, grader, layers: Sequence[int]):
        self.grader, self.layers = grader, list(layers)
        name = "-".join(map(str, self.layers))
        if len(name) > 40:
            name = hashlib.sha1(name.encode()).hexdigest()[:12]
        self.dir = Path(root) / grader.features_fingerprint() / f"layers-{name}"

    def _load(self) -> dict[str, torch.Tensor]:
        have: dict[str, torch.Tensor] = {}
        for f in sorted(self.dir.glob("part-*.pt")):
            try:
                part = torch.load(f, weights_only=True)
                have.update(zip(part["keys"], part["x"].unbind(0)))
            except Exception as e:  # noqa: BLE001  a damaged chunk is recomputed, not fatal
                warnings.warn(f"feature cache: ignoring {f} ({type(e).__name__}: {e})", stacklevel=3)
        return have

    def get(self, conversations: Sequence, completions: Sequence, chunk: int = 32) -> torch.Tensor:
        """``[N, len(layers), len(POOLINGS), H]`` float32 features, computing (and saving) only the missing rows."""
        keys = [content_key(c, r) for c, r in zip(conversations, completions)]
        have = self._load()
        todo = list(dict.fromkeys(k for k in keys if k not in have))
        where = {k: i for i, k in reversed(list(enumerate(keys)))}
        if todo:
            self.dir.mkdir(parents=True, exist_ok=True)
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc="hidden-state features", unit="completion", disable=not todo)
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            x = self.grader.features([conversations[where[k]] for k in part], [completions[where[k]] for k in part],
                                     self.layers, bar=bar)
            name = hashlib.sha1("".join(part).encode()).hexdigest()[:16]
            atomic_write(self.dir / f"part-{name}.pt", lambda tmp: torch.save({"keys": part, "x": x}, tmp))
            have.update(zip(part, x.unbind(0)))
        bar.close()
        if not keys:
            return torch.zeros(0, len(self.layers), len(POOLINGS), self.grader.model.config.hidden_size)
        return torch.stack([have[k] for k in keys])
