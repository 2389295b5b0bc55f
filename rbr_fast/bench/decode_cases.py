"""Benchmark case for the decode-time linear layer: 8 rows (one token of 8 sequences) against
SmolLM2-135M's LM head (49152 x 576) and its MLP shape (1536 x 576); the peer is
``torch.nn.functional.linear`` (MKL GEMM on CPU). The floor is the weight bytes over DRAM bandwidth:
the weights do not fit in cache and each is read once."""
from __future__ import annotations

import torch

from rbr_fast import ops

from .harness import Case, Inputs, Peer, Target, register

HIDDEN = 576


def _build(size, device) -> Inputs:
    g = torch.Generator().manual_seed(0)
    M, N = size
    return {"x": torch.randn(M, HIDDEN, generator=g).to(device),
            "w": (torch.randn(N, HIDDEN, generator=g) * HIDDEN ** -0.5).to(device),
            "b": torch.randn(N, generator=g).to(device)}


register(Case(
    name="skinny_linear", op="skinny_linear", build=_build,
    ours=lambda x: ops.skinny_linear(x["x"], x["w"], x["b"]),
    peers={"F.linear (BLAS)": Peer(lambda x: torch.nn.functional.linear(x["x"], x["w"], x["b"]))},
    nbytes=lambda x: x["w"].numel() * 4, sizes=[(8, 49152), (8, 1536), (1, 49152), (16, 49152)],
    quick_sizes=[(8, 4099)], default_size=(8, 49152), tol=1e-4, size_label="M rows x N outputs"),
    Target("skinny_linear", (8, 49152), "F.linear (BLAS)", 1.5, "skinny_linear 8x49152 (SmolLM2 LM head) vs F.linear"),
)
