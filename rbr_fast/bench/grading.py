"""Benchmark cases for the grader: shared-prefix packed grading against the naive way (one full
prompt per (completion, proposition), right-padded batches under the same token budget,
``model(...).logits`` then ``log_softmax``). Sizes are (N completions, P propositions of the
default spec); the completions come from the RBR gold set when it is beside the repo, else from a
fixed synthetic set. Importing this module registers the cases.

- ``grader``: the embedded SmolLM2-135M-Instruct (float32 on CPUs without AMX; see
  ``resolve_dtype``), the issue's target. Skipped when the embedded model is not installed.
- ``grader-tiny``: a tiny random llama (the tests' model), a CI-sized check of the same code path.

Floor: the packed layout's tokens x 2 FLOPs x the model's matmul parameters, at the speed of one
bare ``[2048, H] x [H, I]`` matmul in the model's dtype measured in the same run.
"""
from __future__ import annotations

import functools
import random

import torch

from rbr_fast import data
from rbr_fast.datasets import read_jsonl
from rbr_fast.grading import Grader
from rbr_fast.grading.packing import buckets

from . import tiny_lm
from .harness import Case, Inputs, Options, Peer, Size, Skip, Target, measure, register


@functools.lru_cache(maxsize=None)
def _examples(n: int) -> tuple[list, list]:
    """``n`` (conversation, completion) pairs: a seeded sample of the gold set (repeated when short)."""
    rows = read_jsonl(data.gold())
    random.Random(0).shuffle(rows)
    rows = (rows * (n // len(rows) + 1))[:n]
    return [r.conversation for r in rows], [r.completion for r in rows]


@functools.lru_cache(maxsize=None)
def _grader(which: str, device: str) -> Grader:
    if which == "tiny":
        return Grader(tiny_lm.model().to(device), tiny_lm.tokenizer(), progress=False)
    try:
        return Grader.default(device=device, progress=False)
    except Exception as e:  # not installed, or cannot load here
        raise Skip(f"embedded model unavailable: {e}") from None


def _build(which: str):
    def build(size: Size, device: torch.device) -> Inputs:
        n, p = size
        grader = _grader(which, str(device))
        names = grader.spec.proposition_names[:p]
        convs, comps = _examples(n)
        return {"grader": grader, "names": names, "convs": convs, "comps": comps}
    return build


def _ours(x: Inputs):
    out = x["grader"].grade(x["convs"], x["comps"], x["names"])
    return out.p_yes, out.mass


def _prompts(x: Inputs) -> list[list[int]]:
    g = x["grader"]
    return [g.prompt_ids(c, r, n) for c, r in zip(x["convs"], x["comps"]) for n in x["names"]]


def _naive(x: Inputs):
    """One prompt per (completion, proposition); full logits, log_softmax, read the last position."""
    g = x["grader"]
    prompts = _prompts(x)
    device = next(g.model.parameters()).device
    p_yes = torch.empty(len(prompts))
    mass = torch.empty(len(prompts))
    with torch.inference_mode():
        for rows in buckets([len(p) for p in prompts], 0, g.token_budget):
            T = max(len(prompts[i]) for i in rows)
            ids = torch.full((len(rows), T), g.pad_id, dtype=torch.int64)
            mask = torch.zeros(len(rows), T, dtype=torch.int64)
            for k, i in enumerate(rows):
                ids[k, :len(prompts[i])] = torch.tensor(prompts[i])
                mask[k, :len(prompts[i])] = 1
            logp = torch.log_softmax(g.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
            last = logp[torch.arange(len(rows)), mask.sum(1).to(device) - 1]
            ly, ln = last[:, g.yes_ids].logsumexp(-1), last[:, g.no_ids].logsumexp(-1)
            p_yes[rows] = torch.sigmoid(ly - ln).cpu()
            mass[rows] = torch.exp(torch.logaddexp(ly, ln)).cpu()
    n = len(x["convs"])
    return p_yes.view(n, -1), mass.view(n, -1)


def _tokens(x: Inputs) -> tuple[float, float]:
    """Tokens encoded per completion: (packed layout, naive layout)."""
    g, n, first = x["grader"], len(x["convs"]), x["names"][0]
    tails = sum(len(g.question_ids(name)) for name in x["names"])
    prefixes = sum(len(g.prompt_ids(c, r, first)) - len(g.question_ids(first)) for c, r in zip(x["convs"], x["comps"]))
    return (prefixes + n * tails) / n, sum(len(p) for p in _prompts(x)) / n


def _describe(x: Inputs) -> str:
    packed, naive = _tokens(x)
    g = x["grader"]
    return (f"{next(g.model.parameters()).dtype}; tokens encoded per completion: packed {packed:.0f}, "
            f"naive {naive:.0f} ({naive / packed:.1f}x)")


def _floor(x: Inputs, opts: Options) -> float:
    g = x["grader"]
    model = g.model
    dtype = next(model.parameters()).dtype
    cfg = model.config
    params = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed" not in name
                 and "lm_head" not in name)
    tokens = _tokens(x)[0] * len(x["convs"])
    a = torch.randn(2048, cfg.hidden_size, device=opts.device).to(dtype)
    b = torch.randn(cfg.hidden_size, cfg.intermediate_size, device=opts.device).to(dtype)
    t = measure(lambda: a @ b, opts.device, 0.2, min_reps=3).median_s
    flops_per_s = 2 * a.shape[0] * a.shape[1] * b.shape[1] / t
    return 2 * params * tokens / flops_per_s


def _case(name: str, which: str, sizes: list[Size], quick: list[Size], default: Size, tol: float) -> Case:
    return Case(name, "grade", _build(which), _ours, {"naive prompt-per-question": Peer(_naive)},
                nbytes=lambda x: 0, sizes=sizes, quick_sizes=quick, default_size=default, tol=tol,
                floor_s=_floor, size_label="completions", warmup=0, describe=_describe)


# float32 on this CPU: packed and naive see identical ids, so they differ only by summation order
register(_case("grader", "smollm2", [(8, 23)], [(2, 23)], (2, 23), tol=1e-3),
         Target("grader", (8, 23), "naive prompt-per-question", 8.0,
                "shared-prefix grading >= 8x the naive throughput (SmolLM2, default spec)"))
register(_case("grader-tiny", "tiny", [(16, 23)], [(4, 23)], (4, 23), tol=1e-4))
