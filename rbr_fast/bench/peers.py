"""Peer implementations the benchmarks compare against, written here from the published algorithms.

Peers that already exist in this package (the per-timestep loop is ``rbr_fast.ops.advantages.reference.gae``)
are called, not duplicated. Each peer computes exactly what ours does at valid positions; the
harness checks that before it times anything.
"""
from __future__ import annotations

import importlib
import signal
import threading
import time
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .harness import Inputs, Options, Peer, Skip


def chunked_scan_gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float,
                     chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE as the slime project computes it: a chunked linear scan with matmuls, no mask support.

    With w = gamma * lam, A_t = delta_t + w * A_{t+1}. Reversed, that is a prefix scan; inside each
    chunk of ``chunk`` steps it is one matmul with M[i, j] = w^(i-j) (i >= j), and the chunks are
    then joined sequentially: position i of a chunk gains w^(i+1) times the previous chunk's last
    value. The value after the last step is 0. Returns (advantages, returns = advantages + values).
    """
    B, T = rewards.shape
    next_values = F.pad(values[:, 1:], (0, 1))
    delta = rewards + gamma * next_values - values
    n = -(-T // chunk)
    # zero padding at the end of the reversed sequence (the start of the original) affects nothing before it
    x = F.pad(delta.flip(1), (0, n * chunk - T)).view(B, n, chunk)
    i = torch.arange(chunk, device=rewards.device, dtype=torch.float64)
    expo = i[:, None] - i[None, :]
    m = torch.where(expo >= 0, w_pow(gamma * lam, expo.clamp(min=0)), 0.0).to(delta.dtype)
    local = x @ m.T  # local[b, k, i] = sum_{j <= i} w^(i-j) x[b, k, j]
    decay = w_pow(gamma * lam, i + 1).to(delta.dtype)
    out = torch.empty_like(local)
    carry = torch.zeros(B, dtype=delta.dtype, device=delta.device)
    for k in range(n):
        out[:, k] = local[:, k] + decay * carry[:, None]
        carry = out[:, k, -1]
    adv = out.view(B, n * chunk)[:, :T].flip(1)
    return adv, adv + values


def w_pow(w: float, e: torch.Tensor) -> torch.Tensor:
    """w ** e elementwise in float64, with 0 ** 0 = 1 (w = 0 is a valid gamma * lam)."""
    return torch.full_like(e, w).pow(e)


def trl_masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                      eps: float = 1e-8) -> torch.Tensor:
    """Whitening as TRL writes it: mean and unbiased variance from masked sums, then
    (x - mean) * rsqrt(var + eps). Masked positions keep whatever that gives (not zeroed)."""
    m = mask.to(x.dtype)
    n = m.sum()
    mean = (x * m).sum() / n
    var = ((x - mean) ** 2 * m).sum() / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out + mean if not shift_mean else out


class OptionalPeer(Peer):
    """A peer from a third-party package, skipped with a note when ``module`` is not importable
    (imported at first use, so that importing the benchmarks stays cheap)."""

    def __init__(self, module: str, fn: Callable[[Inputs], Any], outputs: Optional[tuple[int, ...]] = None,
                 note: str = "", cuda_only: bool = False):
        super().__init__(fn=fn, outputs=outputs, note=note)
        self.module = module
        self.cuda_only = cuda_only  # a GPU kernel library: skipped on other devices

    def setup(self, inputs: Inputs, opts: Options) -> tuple[Callable[[Inputs], Any], Optional[float]]:
        if self.cuda_only and opts.device.type != "cuda":
            raise Skip(f"{self.module.split('.')[0]} runs on CUDA only")
        try:
            importlib.import_module(self.module)
        except Exception as e:  # e.g. verl pulls in ray; any import failure just means "not here"
            raise Skip(f"{self.module.split('.')[0]} not importable ({type(e).__name__})") from None
        return self.fn, None


class _OverBudget(BaseException):
    """Raised from SIGALRM to abandon a compile. A BaseException, so the compiler's own
    ``except Exception`` handlers cannot swallow it and fall back to eager."""


def call_with_deadline(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()``, interrupted with ``_OverBudget`` after ``seconds`` (main thread with SIGALRM only;
    elsewhere it runs to completion)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return fn()

    def on_alarm(signum, frame):
        raise _OverBudget()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class CompiledPeer(Peer):
    """``torch.compile(fn, dynamic=False)``, compiled once per input shape within the compile budget.

    Compile time (dynamo trace + inductor codegen + C++ build + first run) is reported separately.
    Compile time grows with the sequence length T when ``fn`` loops over time steps (dynamo unrolls
    the loop), so after a compile at some T runs over budget, larger T are skipped without trying.
    """

    def __init__(self, fn: Callable[[Inputs], Any], note: str = ""):
        super().__init__(fn=fn, note=note)
        self._compiled: dict[tuple, tuple[Callable, float]] = {}
        self._over_budget_t: Optional[int] = None

    def setup(self, inputs: Inputs, opts: Options) -> tuple[Callable[[Inputs], Any], Optional[float]]:
        budget = opts.compile_budget_s
        if budget <= 0:
            raise Skip("torch.compile not tried (compile budget 0 s; set --compile-budget)")
        tensors = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
        shape = tuple(tuple(v.shape) for v in tensors)
        if shape in self._compiled:
            return self._compiled[shape]
        t = tensors[0].shape[-1]  # the length the compile time grows with (T, or V)
        if self._over_budget_t is not None and t >= self._over_budget_t:
            raise Skip(f"not compiled: T={self._over_budget_t} already took over the {budget:g} s budget")
        compiled = torch.compile(self.fn, dynamic=False)
        t0 = time.perf_counter()
        try:
            call_with_deadline(lambda: compiled(inputs), budget)
        except _OverBudget:
            self._over_budget_t = t
            torch._dynamo.reset()  # drop the abandoned compile's half-built state (other peers recompile on next use, untimed)
            raise Skip(f"compile abandoned after {budget:g} s budget") from None
        self._compiled[shape] = (compiled, time.perf_counter() - t0)
        return self._compiled[shape]
