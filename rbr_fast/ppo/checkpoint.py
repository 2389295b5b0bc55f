"""Checkpoints that survive a kill at any moment.

A checkpoint is a folder ``OUT/checkpoints/step_NNNNNN`` with the model and optimizer state
(``state.pt``, written by process 0) and one RNG file per process. It is written under a temporary
name and renamed when complete; ``OUT/checkpoints/latest`` (itself replaced atomically) names the
newest complete one, so a reader never sees a half-written checkpoint.
"""
from __future__ import annotations

import pickle
import random
import shutil
from pathlib import Path
from typing import Optional

import torch

from ..errors import UserError
from ..io import atomic_write_text
from . import distributed


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
    distributed.barrier()
    torch.save(rng_state(), tmp / f"rng_{rank}.pt")
    distributed.barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write_text(root / "latest", final.name + "\n")
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier()
    return final


def latest(root: Path) -> Optional[Path]:
    """The newest complete checkpoint under ``root`` (None when there is none)."""
    p = Path(root) / "latest"
    if not p.is_file():
        return None
    name = p.read_bytes().decode("utf-8", "replace").strip()
    folder = Path(root) / name
    if not name or not (folder / "state.pt").is_file():
        raise UserError(f"{p} names {name!r}, which is incomplete or missing: the run directory was edited by "
                        "hand; point `latest` at a complete step_* folder")
    return folder


# config fields a run cannot change and still continue the same prompt order and models
RESUME_FIELDS = ("policy", "critic", "batch_size", "group_size", "seed", "prompts", "eval_prompts")


def _read(path: Path, device, mmap: bool = False) -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=False, mmap=mmap)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:  # truncated or not a torch.save file
        raise UserError(f"{path}: unreadable checkpoint file ({e}); resume from an older step_* folder "
                        "(edit `latest`) or start afresh") from None


def _state(folder: Path, rank: int, device, mmap: bool = False) -> dict:
    if not (folder / f"rng_{rank}.pt").is_file():
        raise UserError(f"{folder} has no RNG state for process {rank}: resume with the same number of "
                        "processes it was saved with")
    state = _read(folder / "state.pt", device, mmap)
    if not isinstance(state, dict) or not {"step", "model", "optimizer", "config"} <= set(state):
        raise UserError(f"{folder / 'state.pt'}: not a PPO checkpoint (no step, model, optimizer and config)")
    return state


def check_config(folder: Path, saved: dict, config: dict) -> None:
    """Refuse to resume a checkpoint made with other ``RESUME_FIELDS``."""
    saved = {"group_size": 1, **saved}  # checkpoints from before group_size existed had one completion per prompt
    changed = [k for k in RESUME_FIELDS if saved.get(k) != config.get(k)]
    if changed:
        was = ", ".join(f"{k}={saved.get(k)!r} (now {config.get(k)!r})" for k in changed)
        raise UserError(f"cannot resume {folder}: it was made with different {', '.join(changed)}: {was}")


def resumable(root: Path, config: dict, rank: int) -> Optional[Path]:
    """The latest checkpoint under ``root`` (None when there is none), checked before anything is
    built: its files are there and readable (tensors memory-mapped, not read) and its config fits
    ``config``. Nothing is restored."""
    folder = latest(root)
    if folder is not None:
        check_config(folder, _state(folder, rank, "cpu", mmap=True)["config"], config)
    return folder


def load(folder: Path, rank: int, device: torch.device) -> dict:
    """The state saved by ``save``; restores this process's RNG streams as a side effect."""
    state = _state(folder, rank, device)
    set_rng_state(_read(folder / f"rng_{rank}.pt", "cpu"))
    return state
