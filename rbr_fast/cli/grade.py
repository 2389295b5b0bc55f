"""``rbr-fast grade``: P(yes) of every rule-spec proposition for each row of a jsonl file."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

from ..data.readers import Example, read_jsonl
from ..errors import UserError
from ..grading.grader import Grader, Grades
from ..io import check_output_file
from ..rules import RuleSpec
from .common import (add_model_args, add_rows_args, check_model_args, default_output, grader_from_args,
                     propositions_arg, write_grades)


def read_inputs(a: argparse.Namespace, data: Path) -> tuple[list[Example], RuleSpec, Optional[list[str]]]:
    """(rows, spec, propositions asked), all checked before a model loads."""
    spec = check_model_args(a)
    rows = read_jsonl(data, a.limit)
    if not rows:
        raise UserError(f"{data}: no rows to grade")
    return rows, spec, propositions_arg(a, spec)


def timed_grade(grader: Grader, convs, comps, names) -> Grades:
    t = time.perf_counter()
    grades = grader.grade(convs, comps, names)
    dt = time.perf_counter() - t
    print(f"graded {len(convs)} completions x {len(grades.propositions)} propositions in {dt:.1f} s: "
          f"{len(convs) / dt:.2f} completions/s ({grader.truncated} cut to max_length={grader.max_length})")
    return grades


def run(a: argparse.Namespace) -> int:
    rows, spec, props = read_inputs(a, Path(a.data))
    out = Path(a.out or default_output(Path(a.data).with_suffix(".grades.jsonl").name))
    check_output_file(out, "--out")
    grades = timed_grade(grader_from_args(a, spec), [r.conversation for r in rows], [r.completion for r in rows], props)
    write_grades(out, grades)
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    g = sub.add_parser("grade", help="P(yes) of every proposition for every row of a jsonl file")
    g.add_argument("--data", required=True, help="jsonl with prompt/conversation and completion per row")
    g.add_argument("--out", help=f"output jsonl (default: {default_output('DATA.grades.jsonl')})")
    add_model_args(g)
    add_rows_args(g)
    g.set_defaults(func=run)
