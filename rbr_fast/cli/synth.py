"""``rbr-fast synth``: synthetic comparison data, one completion per quality class per prompt
(``rbr_fast.reward.synth``), optionally kept only where the grader agrees."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..data.comparisons import read_rows
from ..evaluation import xstest
from ..io import atomic_write_text, check_output_file
from ..reward import synth
from .common import add_model_args, check_model_args, default_output, grader_from_args, number


def run(a: argparse.Namespace) -> int:
    """Write one completion per quality class for each prompt, then optionally keep the agreeing ones."""
    spec = check_model_args(a)
    if a.prompts:
        _, rows = read_rows(Path(a.prompts), ("prompt", "response_type"), spec)
        prompts, types = [r["prompt"] for r in rows], [r["response_type"] for r in rows]
    else:
        items = {it.prompt_id: it for it in xstest.load(a.xstest, a.limit, a.seed)}
        prompts = [it.prompt for it in items.values()]
        types = [xstest.RESPONSE_TYPE[it.label] for it in items.values()]
    check_output_file(a.out, "--out")
    grader = grader_from_args(a, spec)
    t = time.perf_counter()
    out = synth.generate(grader.model, grader.tokenizer, grader.spec, prompts, types, a.max_new_tokens, a.batch_size,
                      a.temperature, a.seed)
    print(f"wrote {len(out)} completions for {len(prompts)} prompts in {time.perf_counter() - t:.1f} s")
    if a.filter:
        grades = grader.grade([r["prompt"] for r in out], [r["completion"] for r in out])
        kept = synth.keep_agreeing(out, grades.p_yes, grader.spec)
        print(f"filter: the grader puts {len(kept)} of {len(out)} completions in their intended class")
        out = kept
    atomic_write_text(a.out, "".join(json.dumps(r) + "\n" for r in out))
    print(f"wrote {a.out}")
    return 0


def register(sub) -> None:
    s = sub.add_parser("synth", help="synthetic comparison data: one completion per quality class per prompt")
    s.add_argument("--prompts", help="jsonl with prompt and response_type per row (default: XSTest prompts)")
    s.add_argument("--data", "--xstest", dest="xstest", help="XSTest folder, when --prompts is not given "
                   "(default: the copy shipped in the package)")
    s.add_argument("--limit", type=number(int, 1), help="a seeded sample of this many XSTest prompts")
    s.add_argument("--out", default=default_output("synth.jsonl"))
    s.add_argument("--max-new-tokens", type=number(int, 1), default=96)
    s.add_argument("--batch-size", type=number(int, 1), default=16)
    s.add_argument("--temperature", type=number(float, 0), default=0.8, help="0: greedy")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--filter", action="store_true", help="keep only completions the grader puts in their class")
    add_model_args(s)
    s.set_defaults(func=run)
