"""torch.distributed glue: process group from torchrun's environment, sums across processes.
One process (no ``WORLD_SIZE``) needs no process group: every helper is then the identity."""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def init(device_type: str) -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30))
    return dist.get_rank(), dist.get_world_size()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over processes (a copy; float64 sums stay exact enough for counts and moments)."""
    x = x.clone()
    if active():
        dist.all_reduce(x)
    return x


def all_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenation of every process's equal-shaped ``x`` along dim 0, in rank order."""
    if not active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def barrier() -> None:
    if active():
        dist.barrier()


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
