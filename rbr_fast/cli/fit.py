"""``rbr-fast fit``: fit RBR weights on ranked comparisons (``rbr_fast.reward.fit.fit_comparisons``)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..data.comparisons import ranks, read_rows
from ..evaluation.xstest import ANCHOR
from ..io import check_output_file
from ..reward.fit import fit_comparisons
from .common import add_model_args, check_model_args, default_output, grader_from_args, number


def run(a: argparse.Namespace) -> int:
    data = Path(a.data)
    spec = check_model_args(a)
    wheres, rows = read_rows(data, ("prompt", "completion", "response_type"), spec)
    row_ranks = ranks(wheres, rows, spec)
    cache = Path(a.grades_cache or data.with_suffix(".grades.jsonl"))
    check_output_file(a.out, "--out")
    check_output_file(cache, "--grades-cache")
    t = time.perf_counter()
    weights, res = fit_comparisons(grader_from_args(a, spec), rows, row_ranks, cache, margin=a.margin,
                                   val_fraction=a.val_fraction, anchor=a.anchor, seed=a.seed)
    weights.save(a.out)
    print(f"graded and fitted on {res.train['pairs']} pairs in {time.perf_counter() - t:.1f} s: pair accuracy "
          f"{res.train['pair_accuracy']:.3f}, hinge {res.train['hinge']:.3f} (train); {res.val['pair_accuracy']:.3f}, "
          f"{res.val['hinge']:.3f} (validation, {res.val['pairs']} pairs of held-out prompts); wrote {a.out}")
    return 0


def register(sub) -> None:
    f = sub.add_parser("fit", help="fit RBR weights on ranked comparisons (hinge loss, per response type)")
    f.add_argument("--data", required=True, help="jsonl: prompt, completion, response_type, rank (0 = best) or "
                                                 "class, optional prompt_id (e.g. the output of `rbr-fast synth`)")
    f.add_argument("--out", default=default_output("weights.json"), help="weights file to write")
    f.add_argument("--grades-cache", help="grades jsonl cache (default: DATA.grades.jsonl)")
    f.add_argument("--val-fraction", type=number(float, 0, 1, open_high=True), default=0.2,
                   help="share of prompts held out")
    f.add_argument("--margin", type=number(float, 0), default=1.0)
    f.add_argument("--anchor", type=number(float, 0), default=ANCHOR,
                   help="L2 pull toward the hand-set weights (0: a free fit)")
    f.add_argument("--seed", type=int, default=0)
    add_model_args(f)
    f.set_defaults(func=run)
