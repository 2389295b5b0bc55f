"""How the C++ extension is compiled, and the record of what a build was compiled against.

Shared by ``setup.py`` and the compile-on-first-use fallback; imports nothing outside the standard
library, so ``setup.py`` can load it before torch.

The kernels use 8-wide GCC vector types; without an ISA that has 256-bit registers the compiler
splits every operation and they run ~10x slower, so the target matters. On x86_64 the scan kernels
also have a 16-wide AVX-512 copy, compiled by a target attribute whatever the target and run only
where the CPU has AVX-512 (``csrc/simd.h``, ``by_width``). ``RBR_FAST_MARCH``:

- unset: a portable target, the one wheels are built for: ``x86-64-v3`` (AVX2 + FMA) on x86_64;
  elsewhere the compiler's default (on aarch64 NEON is baseline, each 8-wide op is two 128-bit ones)
- ``native``: the building CPU (e.g. AVX-512 on a recent Xeon); the binary may not run on another CPU
- ``none``: no ``-march``; any other value is passed as ``-march=VALUE``
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

ENV = "RBR_FAST_MARCH"
PORTABLE = {"x86_64": "x86-64-v3", "amd64": "x86-64-v3"}
# written beside the built extension: the torch it links against, and the flags
RECORD = "_C_build.json"


def march() -> str:
    """The ``-march`` value of this build ('' for none)."""
    arch = os.environ.get(ENV, "").strip()
    if not arch:
        return PORTABLE.get(platform.machine().lower(), "")
    return "" if arch.lower() == "none" else arch


def cxx_flags() -> list[str]:
    arch = march()
    return ["-O3", "-fopenmp"] + ([f"-march={arch}"] if arch else [])


def torch_series(version: str) -> str:
    """'2.13' of '2.13.0+cpu': releases of one series share the C++ ABI an extension links against."""
    return ".".join(version.split("+")[0].split(".")[:2])


def write_record(path: str | Path, torch_version: str) -> None:
    Path(path).write_text(json.dumps({"torch": torch_version, "cxx_flags": cxx_flags()}, indent=1) + "\n")


def read_record(path: str | Path) -> dict | None:
    """The record beside a built extension, or None when there is none (a build older than records)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
