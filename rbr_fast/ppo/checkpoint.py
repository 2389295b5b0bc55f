"""Checkpoints that survive a kill at any moment.

A checkpoint is a folder ``OUT/checkpoints/step_NNNNNN`` with the model and optimizer state
(``state.pt``, written by process 0) and one RNG file per process. It is written under a temporary
name and renamed when complete; ``OUT/checkpoints/latest`` (itself replaced atomically) names the
newest complete one, so a reader never sees a half-written checkpoint.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Optional

import torch

from ..io import atomic_write_text
from . import distributed as D


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(root: Path, step: int, state: dict, rank: int, keep: int) -> Path:
    """Every process calls this; process 0 writes ``state``. Returns the checkpoint folder."""
    root = Path(root)
    final, tmp = root / f"step_{step:06d}", root / f".tmp_step_{step:06d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(state, tmp / "state.pt")
    D.barrier()
    torch.save(rng_state(), tmp / f"rng_{rank}.pt")
    D.barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write_text(root / "latest", final.name + "\n")
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    D.barrier()
    return final


def latest(root: Path) -> Optional[Path]:
    p = Path(root) / "latest"
    if not p.is_file():
        return None
    folder = Path(root) / p.read_text().strip()
    if not (folder / "state.pt").is_file():
        raise RuntimeError(f"{p} names {folder.name}, which is incomplete or missing: the run directory was "
                           "edited by hand; point `latest` at a complete step_* folder")
    return folder


def load(folder: Path, rank: int, device: torch.device) -> dict:
    """The state saved by ``save``; restores this process's RNG streams as a side effect."""
    rng = folder / f"rng_{rank}.pt"
    if not rng.is_file():
        raise RuntimeError(f"{folder} has no RNG state for process {rank}: resume with the same number of "
                           "processes it was saved with")
    state = torch.load(folder / "state.pt", map_location=device, weights_only=False)
    set_rng_state(torch.load(rng, weights_only=False))
    return state
