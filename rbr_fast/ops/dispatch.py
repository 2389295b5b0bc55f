"""Backend selection for every op: ``backend_for(device, op)`` is the module
``rbr_fast.ops.<op>.<reference|cpp|triton>`` that runs the op on ``device``.

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

from . import extension

BACKENDS = ("auto", "ref", "cpp", "triton")
MODULES = {"ref": "reference", "cpp": "cpp", "triton": "triton"}  # backend -> module name in each op package
_warned: set[str] = set()


def requested() -> str:
    name = os.environ.get("RBR_FAST_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise RuntimeError(f"RBR_FAST_BACKEND={name!r} is not one of {list(BACKENDS)}")
    return name


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _unavailable(name: str) -> str:
    """'' if backend ``name`` is installed, else why it is not."""
    if name == "cpp":
        return extension.unavailable_reason()
    if name == "triton":
        try:
            import triton  # noqa: F401
        except ImportError as e:  # triton is Linux-only and optional on CPU machines
            return f"triton is not importable ({e}); install it with `pip install triton`"
    return ""


def _usable_on(name: str, device: torch.device) -> str:
    """'' if backend ``name`` can run on ``device``, else the reason it cannot."""
    if name == "cpp" and device.type != "cpu":
        return f"the C++ backend runs on CPU tensors, got {device}; use RBR_FAST_BACKEND=auto or triton"
    if name == "triton" and device.type != "cuda" and not triton_interpreted():
        return (f"the Triton backend needs CUDA tensors, got {device}; set TRITON_INTERPRET=1 (before "
                "triton is imported) to run it on CPU, or use RBR_FAST_BACKEND=auto")
    return ""


def _pick(device: torch.device) -> str:
    """The backend that runs ops on ``device``: 'ref', 'cpp' or 'triton'."""
    name = requested()
    if name != "auto":
        why = _usable_on(name, device) or _unavailable(name)
        if why:
            raise RuntimeError(f"RBR_FAST_BACKEND={name} cannot run: {why}")
        return name
    preferred = "triton" if device.type == "cuda" else "cpp"
    why = _usable_on(preferred, device) or _unavailable(preferred)
    if not why:
        return preferred
    if why not in _warned:
        _warned.add(why)
        warnings.warn(f"rbr_fast: falling back to the PyTorch reference backend: {why}", RuntimeWarning, stacklevel=4)
    return "ref"


_modules: dict[tuple[str, str], ModuleType] = {}  # (op, backend) -> module: import_module costs a few us per call


def backend_for(device: torch.device, op: str) -> ModuleType:
    """The backend module that runs ``op`` (a package of ``rbr_fast.ops``) on tensors on ``device``."""
    key = (op, _pick(device))
    module = _modules.get(key)
    if module is None:
        module = _modules[key] = importlib.import_module(f"rbr_fast.ops.{op}.{MODULES[key[1]]}")
    return module


def backend_name(device: torch.device | str = "cpu") -> str:
    """Name of the backend ``auto`` (or the forced one) picks for ``device``: 'ref', 'cpp' or 'triton'."""
    return _pick(torch.device(device))
