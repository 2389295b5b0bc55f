"""Decode linears on CUDA tensors: no Triton kernel, since cuBLAS GEMV (``F.linear``) is already at
memory bandwidth on a GPU; this backend is the reference's."""
from __future__ import annotations

from .reference import skinny_linear  # noqa: F401

NAME = "triton"
