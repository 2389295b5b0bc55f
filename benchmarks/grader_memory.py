"""What a capped grader (``memory_gib``) takes on this machine, measured: the embedded SmolLM2 grading
conversations longer than one pass, its activations by the bench harness's ``tensor_peak_bytes`` (the
CUDA allocator's peak on a GPU; the torch profiler's memory timeline on CPU, about 10 minutes on 2 cores
for the four default cases).

    python benchmarks/grader_memory.py [--device cpu] [--cases float32:0.7:heads,float32:1.0:questions,...]

Prints one row per case: the cap, the token budget it gives, the weights, the measured activations and
their sum against the cap.
"""
from __future__ import annotations

import argparse
import random
import warnings

import torch

from rbr_fast.bench.harness import tensor_peak_bytes
from rbr_fast.grading import Grader, memory

CASES = "float32:0.7:heads,float32:1.0:questions,bfloat16:0.4:heads,bfloat16:0.5:questions"


def rows(n: int = 12, words: int = 3000) -> tuple[list[str], list[str]]:
    """Conversations and replies of random words, most longer than a capped pass."""
    rng = random.Random(0)
    vocab = "the a cat dog how do I make bake bread kill process python server safely home".split()
    text = lambda: " ".join(rng.choice(vocab) for _ in range(rng.randint(words // 2, words)))  # noqa: E731
    return [text() for _ in range(n)], [text() for _ in range(n)]


def measure(dtype: torch.dtype, cap: float, questions: bool, device: str) -> dict:
    """Weights and peak activations (bytes) of one capped grader grading ``rows()``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cut-to-fit warning
        g = Grader.default(dtype=dtype, device=device, progress=False, memory_gib=cap, trained=not questions)
        convs, comps = rows()
        g.grade(convs[:1], comps[:1])
        activations = tensor_peak_bytes(lambda: g.grade(convs, comps), torch.device(device))
    return {"budget": g.token_budget, "max_length": g.max_length, "weights": memory.weight_bytes(g.model),
            "activations": activations}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cases", default=CASES, help="DTYPE:CAP_GIB:heads|questions, comma-separated")
    a = p.parse_args(argv)
    G = memory.GiB
    print("| dtype | cap GiB | answered by | token budget | max_length | weights GiB | activations GiB | total GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for case in a.cases.split(","):
        dt, cap, how = case.split(":")
        r = measure(getattr(torch, dt), float(cap), how == "questions", a.device)
        print(f"| {dt} | {cap} | {how} | {r['budget']} | {r['max_length']} | {r['weights'] / G:.3f} | "
              f"{r['activations'] / G:.3f} | {(r['weights'] + r['activations']) / G:.3f} |", flush=True)


if __name__ == "__main__":
    main()
