"""Compiler flags of the C++ extension, shared by ``setup.py`` and the JIT fallback (no torch import).

The kernels use 8-wide GCC vector types; without an ISA that has 256-bit registers the compiler
splits every operation and they run ~10x slower, so the default targets the building machine.
``RBR_FAST_CPU_ARCH`` picks another target (e.g. ``x86-64-v3`` for a wheel that runs on any AVX2
machine), or ``none`` to pass no ``-march`` at all.
"""
import os


def cxx_flags() -> list[str]:
    arch = os.environ.get("RBR_FAST_CPU_ARCH", "native").strip()
    return ["-O3", "-fopenmp"] + ([] if arch.lower() in ("", "none") else [f"-march={arch}"])
