"""``rbr-fast eval-grader``: grader accuracy per proposition against human labels (the RBR gold set
by default); the evaluation itself is ``rbr_fast.evaluation.grader``."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import data
from ..data.labelled import read_labelled
from ..errors import UserError
from ..evaluation import grader as grader_eval
from ..evaluation import response_types
from ..io import atomic_write_text, check_output_dir, dumps
from .common import add_model_args, add_rows_args, default_output, feature_cache_dir, grader_from_args, write_grades
from .grade import read_inputs


def run(a: argparse.Namespace) -> int:
    path = Path(a.data) if a.data else data.gold()
    rows, spec, props = read_inputs(a, path)
    missing = sorted({n for r in rows for n in props or spec.proposition_names if n not in r.labels})
    if missing:
        raise UserError(f"{path}: rows have no human label for {missing}; eval-grader needs a 'propositions' "
                        "dict per row (like the shipped RBR gold set)")
    check_output_dir(a.out_dir, "--out-dir")
    grader = grader_from_args(a, spec)
    labelled = read_labelled(path, spec, limit=a.limit) if grader.heads is not None else []
    t = time.perf_counter()
    report = grader_eval.evaluate_grader(grader, rows, labelled, props or spec.proposition_names,
                                         feature_cache_dir(a.cache_dir), shipped_extras=not a.data)
    print(f"{path.name}: {len(rows)} completions, {report.how} ({time.perf_counter() - t:.1f} s)")
    print(grader_eval.table(report.scores, grader.answered_by))
    if report.by_response_type:
        print("\nper response type (mean over propositions with >= 5 yes and 5 no labels among its rows):")
        for t, m in report.by_response_type.items():
            print(f"  {t:16s} rows {sum(r.response_type == t for r in rows):4d}  auroc {m['yes>=5']['auroc']:.3f}  "
                  f"balanced accuracy {m['yes>=5']['balanced_accuracy']:.3f}")
    if report.written_test:
        print(f"\n{data.written_rare('test').name} (written replies no head was trained on):")
        print(grader_eval.table(report.written_test))
    if report.type_inference:
        print("\nresponse-type inference on prompts the request heads were not fitted on:")
        print(response_types.table(report.type_inference))
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scores.json", dumps(report.to_json(grader.answered_by), indent=1))
    write_grades(out / "grades.jsonl", report.grades)
    png = grader_eval.reliability_plot(report.grades.p_yes, report.labels, out / "reliability.png",
                                       title=f"grader calibration on {path.name} ({len(rows)} completions)")
    print(f"wrote {out / 'scores.json'}, {out / 'grades.jsonl'}"
          + (f", {png}" if png else " (no reliability plot: matplotlib is not installed)"))
    return 0


def register(sub) -> None:
    e = sub.add_parser("eval-grader", help="grader accuracy per proposition against human labels")
    e.add_argument("--data", help="labelled jsonl (default: the RBR gold set shipped in the package, or "
                                  f"${data.ENV}/rbr_gold/train.jsonl)")
    e.add_argument("--out-dir", default=default_output("grader_eval"),
                   help="scores.json, grades.jsonl and reliability.png go here")
    e.add_argument("--cache-dir", help="hidden-state feature cache (default: $RBR_FAST_CACHE/features)")
    add_model_args(e)
    add_rows_args(e)
    e.set_defaults(func=run)
