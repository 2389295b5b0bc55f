"""``rbr-fast relabel``: preference labels for response pairs from the rules on which the two differ
most (``rbr_fast.reward.adaptive.relabel``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.comparisons import read_rows
from ..io import atomic_write_text, check_output_file
from ..reward.adaptive import MODES, relabel
from .common import add_model_args, check_model_args, default_output, grader_from_args, number


def run(a: argparse.Namespace) -> int:
    spec = check_model_args(a)
    _, rows = read_rows(Path(a.data), ("prompt", "completion_a", "completion_b"), spec)
    check_output_file(a.out, "--out")
    out = relabel(grader_from_args(a, spec), rows, a.k, a.mode, a.seed)
    atomic_write_text(a.out, "".join(json.dumps(r) + "\n" for r in out))
    print(f"labelled {len(out)} pairs ({sum(r['preferred'] == 'a' for r in out)} prefer a, "
          f"{sum(r['preferred'] == 'b' for r in out)} prefer b); wrote {a.out}")
    return 0


def register(sub) -> None:
    r = sub.add_parser("relabel", help="preference labels for response pairs from data-adaptive rule selection")
    r.add_argument("--data", required=True, help="jsonl: prompt, completion_a, completion_b, optional response_type "
                                                 "(inferred from the prompt when absent)")
    r.add_argument("--out", default=default_output("relabelled.jsonl"))
    r.add_argument("--k", type=number(int, 1), default=3, help="rules per pair")
    r.add_argument("--mode", default="adaptive", choices=MODES)
    r.add_argument("--seed", type=int, default=0)
    add_model_args(r)
    r.set_defaults(func=run)
