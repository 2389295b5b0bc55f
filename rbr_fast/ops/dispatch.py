"""Backend selection for every op.

``RBR_FAST_BACKEND`` (read at each call, so tests and users can switch at run time):
  auto    Triton on CUDA tensors, C++ on CPU tensors, the PyTorch reference as last resort
  ref     the PyTorch reference (any device)
  cpp     the C++ extension (CPU tensors)
  triton  the Triton kernels (CUDA tensors; CPU tensors only under TRITON_INTERPRET=1)
A forced backend that cannot run raises ``RuntimeError`` naming the fix; ``auto`` falls back to the
reference with a one-line warning, once per reason.
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import torch

BACKENDS = ("auto", "ref", "cpp", "triton")
_warned: set[str] = set()


def requested() -> str:
    name = os.environ.get("RBR_FAST_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise RuntimeError(f"RBR_FAST_BACKEND={name!r} is not one of {list(BACKENDS)}")
    return name


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _load(name: str) -> tuple[ModuleType | None, str]:
    """(module, '') or (None, why it is unavailable)."""
    if name == "ref":
        from . import reference
        return reference, ""
    if name == "cpp":
        from . import cpp_backend
        return (cpp_backend, "") if cpp_backend.available() else (None, cpp_backend.unavailable_reason())
    try:
        return importlib.import_module("rbr_fast.ops.triton_backend"), ""
    except ImportError as e:  # triton is Linux-only and optional on CPU machines
        return None, f"triton is not importable ({e}); install it with `pip install triton`"


def _usable_on(name: str, device: torch.device) -> str:
    """'' if backend ``name`` can run on ``device``, else the reason it cannot."""
    if name == "cpp" and device.type != "cpu":
        return f"the C++ backend runs on CPU tensors, got {device}; use RBR_FAST_BACKEND=auto or triton"
    if name == "triton" and device.type != "cuda" and not triton_interpreted():
        return (f"the Triton backend needs CUDA tensors, got {device}; set TRITON_INTERPRET=1 (before "
                "triton is imported) to run it on CPU, or use RBR_FAST_BACKEND=auto")
    return ""


def backend_for(device: torch.device) -> ModuleType:
    """The backend module that runs an op whose tensors live on ``device``."""
    name = requested()
    if name != "auto":
        why = _usable_on(name, device)
        mod, why_load = (None, why) if why else _load(name)
        if mod is None:
            raise RuntimeError(f"RBR_FAST_BACKEND={name} cannot run: {why_load}")
        return mod
    preferred = "triton" if device.type == "cuda" else "cpp"
    mod, why = _load(preferred) if not _usable_on(preferred, device) else (None, _usable_on(preferred, device))
    if mod is not None:
        return mod
    if why not in _warned:
        _warned.add(why)
        warnings.warn(f"rbr_fast: falling back to the PyTorch reference backend: {why}", RuntimeWarning, stacklevel=3)
    return _load("ref")[0]


def backend_name(device: torch.device | str = "cpu") -> str:
    """Name of the backend ``auto`` (or the forced one) picks for ``device``: 'ref', 'cpp' or 'triton'."""
    return backend_for(torch.device(device)).NAME
