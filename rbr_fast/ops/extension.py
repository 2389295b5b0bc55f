"""Loading the C++ extension ``rbr_fast._C``, whose kernels each op's ``cpp.py`` wraps.

The extension is normally built by ``setup.py``, which records the torch it was compiled against
beside it (``rbr_fast/_C_build.json``). It is compiled on first use with
``torch.utils.cpp_extension.load`` (cached under ``TORCH_EXTENSIONS_DIR``), from the sources shipped
in the package (``rbr_fast/csrc/``) or a checkout's ``csrc/``, with one warning, when it is missing
or was built against another torch series (an extension's C++ ABI is tied to its torch). When that
fails too, ``available()`` is false and the dispatcher falls back to the reference backends.
"""
from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import torch

from . import build_flags

PACKAGE = Path(__file__).resolve().parents[1]
RECORD = PACKAGE / build_flags.RECORD
# shipped in the package by setup.py; a source checkout (or an editable install) has them beside it
SOURCE_DIRS = (PACKAGE / "csrc", PACKAGE.parent / "csrc")


def sources() -> list[str]:
    """The C++ sources to compile on first use: the first folder of ``SOURCE_DIRS`` that has them."""
    for folder in SOURCE_DIRS:
        found = sorted(str(p) for p in folder.glob("*.cpp"))
        if found:
            return found
    return []


def _prebuilt():
    """(the ``rbr_fast._C`` module, None), or (None, why it is not used)."""
    record = build_flags.read_record(RECORD)
    if record is not None and build_flags.torch_series(record["torch"]) != build_flags.torch_series(torch.__version__):
        return None, f"rbr_fast._C was built against torch {record['torch']} but torch {torch.__version__} is installed"
    try:
        from rbr_fast import _C
        return _C, None
    except ImportError as e:
        return None, f"the C++ extension rbr_fast._C is not built ({e})"


def _compile(srcs: list[str]):
    """``cpp_extension.load`` with the interpreter's folder on PATH: a ``pip install ninja`` puts ninja
    there, which is on PATH only in an activated environment."""
    from torch.utils.cpp_extension import load
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), path])
    try:
        return load(name="rbr_fast_C", sources=srcs, extra_cflags=build_flags.cxx_flags(), extra_ldflags=["-fopenmp"],
                    verbose=os.environ.get("RBR_FAST_VERBOSE_BUILD") == "1")
    finally:
        os.environ["PATH"] = path


@functools.lru_cache(maxsize=1)
def _load():
    """(module, None) or (None, reason)."""
    module, why = _prebuilt()
    if module is not None:
        return module, None
    srcs = sources()
    if not srcs:
        return None, f"{why}, and no C++ sources were found in {' or '.join(map(str, SOURCE_DIRS))}"
    warnings.warn(f"rbr_fast: {why}; compiling it from {Path(srcs[0]).parent} (a minute or two the first time; "
                  "cached under $TORCH_EXTENSIONS_DIR)", RuntimeWarning, stacklevel=2)
    try:
        return _compile(srcs), None
    except Exception as e:  # no compiler, no ninja, missing headers, ...: degrade to the reference backend
        return None, (f"{why}, and compiling it failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                      "it needs a C++ compiler and ninja (pip install ninja), or reinstall rbr_fast against this torch")


def available() -> bool:
    return _load()[0] is not None


def loaded() -> bool:
    """Whether the extension is already loaded (never loads or compiles it)."""
    return _load.cache_info().currsize > 0 and _load()[0] is not None


def unavailable_reason() -> str:
    return _load()[1] or ""


def loaded_from() -> str:
    """File of the extension in use: the prebuilt ``rbr_fast/_C*.so`` or a build under ``TORCH_EXTENSIONS_DIR``."""
    return _load()[0].__file__


def module():
    """The loaded extension (when ``available()``); op wrappers look it up per call, so that a
    benchmark can swap in another build."""
    return _load()[0]
