"""Where the grader loads: a check made before it does (``LazyReward.reward``, the one place every
adapter and ``rbr-fast serve`` load it), so that a grader placed where it cannot run fails with one
line saying what to do instead, not deep inside torch.

Two situations the trainers create:

- a CUDA device (``"cuda"``, ``"cuda:1"``) in a process that sees no GPU, or fewer than the index
  needs: verl's reward-loop workers (Ray gives them no GPU) and TRL's async GRPO worker
  (``CUDA_VISIBLE_DEVICES=""``) run without one;
- a GPU with less free memory than the grader needs: in OpenRLHF and verl rollouts vLLM has
  already reserved its ``gpu_memory_utilization`` share of the card (vLLM's default 0.9).

The need is the grader's ``memory_gib`` cap when one is given (the in-process GPU mode: passes are
sized to fit, ``grading.memory``), else an estimate: twice the weights (the weight files of a local
folder or file; the embedded model's parameters in the dtype it loads in; nothing known for a hub id)
plus 1 GiB for activations. A served grader (``model`` an http(s) URL) loads nothing here and is not checked;
neither is a device left unset on a machine without CUDA (the grader then runs on the CPU).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import UserError
from ..grading.memory import GiB
ACTIVATIONS = GiB  # room for the grader's activations, over its weights
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
SERVE = "run `rbr-fast serve` on a GPU node and score through its client (RBRServerReward, or the trainer's URL option)"


class PlacementError(UserError, RuntimeError):
    """The grader cannot load on the device asked for; the one-line message says what to do instead."""


def _visible() -> str:
    v = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "unset" if v is None else repr(v)


def _current() -> int:
    try:
        return torch.cuda.current_device()
    except (AssertionError, RuntimeError):  # a torch built without CUDA
        return 0


def weight_bytes(model: Optional[str], dtype: Any = "auto", gguf_file: Optional[str] = None) -> Optional[int]:
    """Bytes of the grader's weight files: a local file's size, a local folder's safetensors (else
    .bin/.pt, else GGUF) files, the embedded model's parameters in ``dtype`` on CUDA; None for a
    hub id (not on disk here)."""
    if not model or model == "embedded":
        from ..grading import embedded, resolve_dtype
        try:
            dt = resolve_dtype(dtype, torch.device("cuda"))
        except (KeyError, TypeError, ValueError):  # a bad dtype: the grader's load names it
            dt = torch.bfloat16
        return embedded.weight_bytes(dt)
    path = Path(str(model)).expanduser()
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    if gguf_file and (path / gguf_file).is_file():
        return (path / gguf_file).stat().st_size
    files = [f for f in path.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES]
    for suffixes in ((".safetensors",), (".bin", ".pt", ".pth"), (".gguf",)):
        chosen = [f for f in files if f.suffix in suffixes]
        if chosen:  # transformers loads safetensors when present, else the pickles
            return sum(f.stat().st_size for f in chosen)
    return None


def needed_bytes(model: Optional[str], dtype: Any = "auto", gguf_file: Optional[str] = None,
                 memory_gib: Optional[float] = None) -> int:
    """The GPU memory the grader needs: its ``memory_gib`` cap, else 2 x its weights + ``ACTIVATIONS``."""
    if memory_gib is not None:
        return int(memory_gib * GiB)
    return 2 * (weight_bytes(model, dtype, gguf_file) or 0) + ACTIVATIONS


def check_placement(model: Optional[str], device: Any = None, dtype: Any = "auto",
                    gguf_file: Optional[str] = None, memory_gib: Optional[float] = None) -> None:
    """Raise ``PlacementError`` (one line) when the grader ``model`` cannot load on ``device``
    (None: CUDA when available, as ``Grader`` picks) within its ``memory_gib`` cap, if any; see the
    module docstring."""
    from ..grading.grader import served_grader_url
    if served_grader_url(model) is not None:
        return
    if device is None:
        if not torch.cuda.is_available():
            return  # the grader picks the CPU
        device = "cuda"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return  # a device torch cannot read: torch says so where the grader loads
    if dev.type != "cuda":
        return
    shown = str(device)
    if not torch.cuda.is_available():
        raise PlacementError(
            f"grader device {shown!r}: this process sees no GPU (CUDA_VISIBLE_DEVICES={_visible()}); verl's "
            "reward-loop workers (Ray gives them no GPU) and TRL's async GRPO worker (CUDA_VISIBLE_DEVICES=\"\") "
            f"run without one: use device=\"cpu\", or {SERVE}")
    count = torch.cuda.device_count()
    index = dev.index if dev.index is not None else _current()
    if not 0 <= index < count:
        raise PlacementError(
            f"grader device {shown!r}: this process sees {count} GPU(s), cuda:0..cuda:{count - 1} "
            f"(CUDA_VISIBLE_DEVICES={_visible()}, which renumbers them from 0): use one of those, device=\"cpu\", "
            f"or {SERVE}")
    try:
        free, total = torch.cuda.mem_get_info(index)
    except RuntimeError:
        return  # the driver does not say: the load itself will tell
    need = needed_bytes(model, dtype, gguf_file, memory_gib)
    if memory_gib is not None:
        weights = weight_bytes(model, dtype, gguf_file)
        if weights is not None and need <= weights:
            raise PlacementError(f"grader memory_gib={memory_gib:g} is under the grader's weights "
                                 f"({weights / GiB:.2f} GiB): raise it (weights + 0.5 GiB or more)")
    if free < need:
        what = f"{need / GiB:.2f} GiB (its memory_gib cap)" if memory_gib is not None else \
            f"about {need / GiB:.2f} GiB (2 x its weights + 1 GiB; memory_gib sets a cap)"
        raise PlacementError(
            f"grader device {shown!r}: {free / GiB:.2f} GiB free of {total / GiB:.2f} GiB, the grader needs {what}; "
            "in OpenRLHF/verl rollouts vLLM reserves its gpu_memory_utilization share of the card (vLLM's default "
            "0.9): lower it, cap the grader (memory_gib, above its weights), use device=\"cpu\", or serve the grader "
            f"({SERVE})")
