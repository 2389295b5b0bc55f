"""``rbr-fast grade`` and ``rbr-fast eval-grader``."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

import torch

from .. import data
from ..datasets import Example, read_jsonl
from ..errors import UserError, number
from ..io import atomic_write_text, check_model_location, check_output_dir, check_output_file, dumps
from ..rules import RuleSpec
from . import evaluate
from .grader import Grader, Grades, resolve_dtype


def _dtype(name: str) -> str:
    try:
        resolve_dtype(name, torch.device("cpu"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="transformers model folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--gguf-file", help="GGUF file name inside --model")
    p.add_argument("--spec", help="rule spec YAML (default: the shipped safety spec)")
    p.add_argument("--dtype", type=_dtype, default="auto",
                   help="auto (bf16 on CUDA/AMX, else fp32), float32, bfloat16, float16")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--token-budget", type=number(int, 1), default=8192, help="most tokens in one forward pass")
    p.add_argument("--max-length", type=number(int, 1),
                   help="longest prompt; longer conversations are cut from the left")
    p.add_argument("--few-shot", action="store_true", help="show each proposition's examples before its question")


def _add_rows_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=number(int, 1), help="grade only the first N rows")
    p.add_argument("--propositions", help="comma-separated subset of the spec's propositions")


def check_model_args(a: argparse.Namespace) -> RuleSpec:
    """The rule spec of ``add_model_args`` options, checked with ``--model`` before any model loads."""
    if a.model:
        check_model_location(a.model, "--model")
    return RuleSpec.load(a.spec) if a.spec else RuleSpec.default()


def grader_from_args(a: argparse.Namespace, spec: Optional[RuleSpec] = None) -> Grader:
    """The grader of ``add_model_args`` options (``spec``: the one ``check_model_args`` returned)."""
    spec = spec or (RuleSpec.load(a.spec) if a.spec else None)
    kw = dict(spec=spec, token_budget=a.token_budget, max_length=a.max_length, few_shot=a.few_shot)
    if a.model:
        return Grader.from_pretrained(a.model, gguf_file=a.gguf_file, dtype=a.dtype, device=a.device, **kw)
    return Grader.default(dtype=a.dtype, device=a.device, **kw)


def _propositions(a: argparse.Namespace, spec: RuleSpec) -> Optional[list[str]]:
    if not a.propositions:
        return None
    names = [n.strip() for n in a.propositions.split(",")]
    unknown = [n for n in names if n not in spec.propositions]
    if unknown:
        raise UserError(f"--propositions: unknown {', '.join(map(repr, unknown))}; the spec ({spec.source}) has "
                        f"{', '.join(spec.proposition_names)}")
    if len(set(names)) != len(names):
        raise UserError(f"--propositions {a.propositions}: a name is repeated")
    return names


def _inputs(a: argparse.Namespace, data: Path) -> tuple[list[Example], RuleSpec, Optional[list[str]]]:
    """(rows, spec, propositions asked), all checked before a model loads."""
    spec = check_model_args(a)
    rows = read_jsonl(data, a.limit)
    if not rows:
        raise UserError(f"{data}: no rows to grade")
    return rows, spec, _propositions(a, spec)


def _grade(a: argparse.Namespace, rows: list[Example], spec: RuleSpec, props: Optional[list[str]]):
    grader = grader_from_args(a, spec)
    t = time.perf_counter()
    grades = grader.grade([r.conversation for r in rows], [r.completion for r in rows], props)
    dt = time.perf_counter() - t
    print(f"graded {len(rows)} completions x {len(grades.propositions)} propositions in {dt:.1f} s: "
          f"{len(rows) / dt:.2f} completions/s, {len(rows) * len(grades.propositions) / dt:.1f} answers/s "
          f"({grader.truncated} cut to max_length={grader.max_length})")
    return grades


def _write_jsonl(path: Path, grades: Grades) -> None:
    """One line per input row, written atomically (never half a file)."""
    atomic_write_text(path, "".join(
        json.dumps({"index": i, "p_yes": dict(zip(grades.propositions, grades.p_yes[i].tolist())),
                    "mass": dict(zip(grades.propositions, grades.mass[i].tolist()))}) + "\n"
        for i in range(grades.p_yes.shape[0])))


def grade(a: argparse.Namespace) -> int:
    inputs = _inputs(a, Path(a.data))
    out = Path(a.out or Path(a.data).with_suffix(".grades.jsonl").name)
    check_output_file(out, "--out")
    grades = _grade(a, *inputs)
    _write_jsonl(out, grades)
    print(f"wrote {out}")
    return 0


def eval_grader(a: argparse.Namespace) -> int:
    path = Path(a.data) if a.data else data.gold()
    rows, spec, props = _inputs(a, path)
    missing = sorted({n for r in rows for n in props or spec.proposition_names if n not in r.labels})
    if missing:
        raise UserError(f"{path}: rows have no human label for {missing}; eval-grader needs a 'propositions' "
                        "dict per row (like the shipped RBR gold set)")
    check_output_dir(a.out_dir, "--out-dir")
    grades = _grade(a, rows, spec, props)
    labels = torch.tensor([[r.labels[n] for n in grades.propositions] for r in rows])
    scores = evaluate.score(grades.propositions, grades.p_yes, labels)
    print(evaluate.table(scores))
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scores.json", dumps(evaluate.summary(scores), indent=1))
    _write_jsonl(out / "grades.jsonl", grades)
    png = evaluate.reliability_plot(grades.p_yes, labels, out / "reliability.png",
                                    title=f"grader calibration on {path.name} ({len(rows)} completions)")
    print(f"wrote {out / 'scores.json'}, {out / 'grades.jsonl'}"
          + (f", {png}" if png else " (no reliability plot: matplotlib is not installed)"))
    return 0


def register(sub) -> None:
    g = sub.add_parser("grade", help="P(yes) of every proposition for every row of a jsonl file")
    g.add_argument("--data", required=True, help="jsonl with prompt/conversation and completion per row")
    g.add_argument("--out", help="output jsonl (default: DATA.grades.jsonl in the current folder)")
    add_model_args(g)
    _add_rows_args(g)
    g.set_defaults(func=grade)
    e = sub.add_parser("eval-grader", help="grader accuracy per proposition against human labels")
    e.add_argument("--data", help="labelled jsonl (default: the RBR gold set shipped in the package, or "
                                  f"${data.ENV}/rbr_gold/train.jsonl)")
    e.add_argument("--out-dir", default="grader_eval", help="scores.json, grades.jsonl and reliability.png go here")
    add_model_args(e)
    _add_rows_args(e)
    e.set_defaults(func=eval_grader)
