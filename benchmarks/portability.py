"""What a portable build of the C++ extension costs against one for the building CPU.

The same sources are compiled once per ``-march`` target (JIT, cached under ``TORCH_EXTENSIONS_DIR``),
loaded side by side in one process and timed on the public ops in interleaved rounds (the builds'
order alternating). What ``-march`` changes is the instructions, so by default each op runs on one
thread and is timed by that thread's CPU time, which leaves out the time it waits for a core on a
shared machine (wall time of several threads is quantised by the scheduler there). Each build's
time is the median over rounds of the mean call time within a round; the ratio is the median of the
per-round ratios to the first build.

    python benchmarks/portability.py [--march native,x86-64-v3] [--rounds 15] [--round-time 0.2] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import time

import torch

import rbr_fast
from rbr_fast.ops import build_flags, extension


def build(march: str):
    """The extension compiled with ``RBR_FAST_MARCH=march``, under a module name of its own."""
    from torch.utils.cpp_extension import load
    os.environ[build_flags.ENV] = march
    try:
        return load(name="rbr_fast_C_" + re.sub(r"\W", "_", march), sources=extension.sources(),
                    extra_cflags=build_flags.cxx_flags(), extra_ldflags=["-fopenmp"])
    finally:
        del os.environ[build_flags.ENV]


def cases(B: int = 256, T: int = 2048, N: int = 1024, V: int = 49152) -> dict:
    """name -> a call of the public op on fixed inputs (advantages [B, T], log-probs [N, V], fp32)."""
    g = torch.Generator().manual_seed(0)
    mask = torch.arange(T) < torch.randint(T // 4, T + 1, (B, 1), generator=g)
    lp, values, rewards = (torch.randn(B, T, generator=g) for _ in range(3))
    ref, scores = lp + 0.1 * torch.randn(B, T, generator=g), torch.randn(B, generator=g)
    logits = torch.randn(N, V, generator=g)
    labels = torch.randint(V, (N,), generator=g)
    grad_logits = logits.clone().requires_grad_()

    def token_logprobs_fwd_bwd():
        grad_logits.grad = None
        rbr_fast.token_logprobs(grad_logits, labels).sum().backward()

    return {
        f"gae {B}x{T}": lambda: rbr_fast.gae(rewards, values, mask),
        f"ppo_advantages {B}x{T}": lambda: rbr_fast.ppo_advantages(scores, lp, ref, values, mask, whiten=False),
        f"ppo_advantages+whiten {B}x{T}": lambda: rbr_fast.ppo_advantages(scores, lp, ref, values, mask),
        f"yes_no_logprobs {N}x{V}": lambda: rbr_fast.yes_no_logprobs(logits, [10, 11, 12], [20, 21, 22]),
        f"token_logprobs fwd {N}x{V}": lambda: rbr_fast.token_logprobs(logits, labels),
        f"token_logprobs fwd+bwd {N}x{V}": token_logprobs_fwd_bwd,
    }


def mean_call_s(fn, seconds: float, clock) -> float:
    calls, start = 0, clock()
    while True:
        fn()
        calls += 1
        elapsed = clock() - start
        if elapsed >= seconds:
            return elapsed / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--march", default="native,x86-64-v3", help="comma-separated -march targets; the first is the base")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--round-time", type=float, default=0.2, help="seconds per op, build and round")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: timed by CPU time, else wall time)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clock = time.thread_time if a.threads == 1 else time.perf_counter
    os.environ["RBR_FAST_BACKEND"] = "cpp"
    rbr_fast.tune_malloc()
    builds = {m: build(m) for m in a.march.split(",")}
    ops = cases()
    times: dict[tuple[str, str], list[float]] = {}
    for name, fn in ops.items():
        for r in range(a.rounds):
            for march in (list(builds) if r % 2 == 0 else list(builds)[::-1]):
                extension.module = lambda m=builds[march]: m  # the public ops run this build
                fn()  # warm-up
                times.setdefault((name, march), []).append(mean_call_s(fn, a.round_time, clock))
    base = next(iter(builds))
    print(f"torch {torch.__version__}, {a.threads} thread(s), {'CPU' if a.threads == 1 else 'wall'} time, {a.rounds} rounds; "
          f"ratio: time / time with -march={base} (median of per-round ratios)")
    print("| op (fp32) | " + " | ".join(f"-march={m}" for m in builds) + " | " +
          " | ".join(f"{m} / {base}" for m in list(builds)[1:]) + " |")
    print("|---" * (2 * len(builds)) + "|")
    for name in ops:
        t = {m: times[name, m] for m in builds}
        ratios = [statistics.median(x / y for x, y in zip(t[m], t[base])) for m in list(builds)[1:]]
        print(f"| {name} | " + " | ".join(f"{1e3 * statistics.median(t[m]):.2f} ms" for m in builds) + " | " +
              " | ".join(f"{r:.3f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()
