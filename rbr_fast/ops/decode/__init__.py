"""Decode-time linear layers: ``skinny_linear`` and ``decode_linears``, which routes a model's
``nn.Linear`` calls with few rows (sampling) through it while generating.

On CPU, ``torch.nn.functional.linear`` with 8 rows against SmolLM2's weights reads them at a third
of the memory bandwidth (its GEMM tiles for many rows); sampling is nothing but such calls.
``skinny_linear`` runs on the backend chosen by ``rbr_fast.ops.dispatch``: ``cpp.py`` (over
``csrc/decode.cpp``); ``reference.py`` and ``triton.py`` are ``F.linear``.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn

from .. import validate
from ..dispatch import backend_for

__all__ = ["skinny_linear", "decode_linears"]

MAX_ROWS = 16  # above this the BLAS GEMM path is as good: the weights are reused enough from cache


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ weight.T + bias`` for ``x`` ``[M, K]`` with few rows (any M works; it pays off for M <= 16).

    float32 only (the decode path of an fp32 policy); weight ``[N, K]``, bias ``[N]``, same device.
    Same numbers as ``F.linear`` up to float32 summation order.
    """
    op = "skinny_linear"
    validate.linear(op, x, weight, bias)
    if x.dtype != torch.float32:
        raise TypeError(f"{op}: float32 only (the decode path of an fp32 model), got {x.dtype}; use F.linear")
    return backend_for(x.device, "decode").skinny_linear(x.contiguous(), weight.contiguous(),
                                               None if bias is None else bias.contiguous())


def _fast_forward(layer: nn.Linear, original):
    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(x.shape[-1], 1)
        if (0 < rows <= MAX_ROWS and x.dtype == torch.float32 and layer.weight.dtype == torch.float32
                and x.device.type == "cpu" and not torch.is_grad_enabled()):
            return skinny_linear(x.reshape(rows, x.shape[-1]), layer.weight, layer.bias).reshape(*x.shape[:-1], -1)
        return original(x)
    return forward


@contextlib.contextmanager
def decode_linears(model: nn.Module):
    """Within the block, ``model``'s ``nn.Linear`` layers send calls with at most ``MAX_ROWS`` float32
    CPU rows under ``torch.no_grad`` to ``skinny_linear``; everything else is untouched."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and "forward" not in m.__dict__]
    for m in layers:
        m.forward = _fast_forward(m, m.forward)
    try:
        yield model
    finally:
        for m in layers:
            del m.forward
