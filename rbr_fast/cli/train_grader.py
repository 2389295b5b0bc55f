"""``rbr-fast train-grader``: train proposition heads for a grader (``rbr_fast.grading.train``) and write
them with a report."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..data.labelled import default_rows, read_labelled
from ..errors import UserError
from ..evaluation import grader as grader_eval
from ..grading.grader import Grader, load_grader, served_grader_url
from ..grading.train import default_layer, recipe, teacher_labels, train
from ..io import atomic_write_text, check_model_location, check_output_dir, check_output_file, dumps
from ..rules import RuleSpec
from .common import add_model_args, check_model_args, default_output, feature_cache_dir, grader_from_args, number


def run(a: argparse.Namespace) -> int:
    """Train proposition heads (see ``rbr_fast.grading.train``) and write them with a report."""
    spec = check_model_args(a)
    if a.zero_shot or a.heads:
        raise UserError("--zero-shot / --heads do not apply: train-grader trains the heads")
    rows = [] if a.no_shipped_data else default_rows(spec)  # labels of the definitions it shares with the default
    for f in a.data or []:
        rows += read_labelled(f, spec)
    if not rows:
        raise UserError("no training rows: give --data FILE (the shipped data labels only the default spec's "
                        "definitions, and this spec shares none)")
    if a.grader_url or served_grader_url(a.model):
        raise UserError("train-grader trains heads over a local model's hidden states: --model must be local and "
                        "--grader-url does not apply (a served model distils through --teacher URL)")
    if a.teacher and not a.teacher.endswith(".safetensors"):
        check_model_location(a.teacher, "--teacher")
    elif a.teacher and not Path(a.teacher).is_file():
        raise UserError(f"--teacher {a.teacher}: no such heads file")
    if a.memory_gib is not None:
        raise UserError("--memory-gib caps a grader that grades; train-grader only reads hidden states offline: size "
                        "its passes with --token-budget")
    check_output_file(a.out, "--out")
    check_output_dir(a.report_dir, "--report-dir")
    layers = [int(x) for x in a.layers.split(",")] if a.layers else None
    grader = grader_from_args(argparse.Namespace(**{**vars(a), "zero_shot": True, "heads": None}), spec)
    cache = feature_cache_dir(a.cache_dir)
    if a.teacher:
        teacher = _teacher(a, grader, spec)
        rows = teacher_labels(teacher, rows, cache / "teacher" / f"{teacher.fingerprint()}.jsonl")
    t = time.perf_counter()
    res = train(grader, rows, cache, recipe(layers or [default_layer(grader.model.config.num_hidden_layers)],
                                            a.l2, a.kinds, a.request_l2), folds=a.folds, min_positives=a.min_positives,
                balance_sources=not a.no_source_balance, seed=a.seed)
    res.heads.save(a.out)
    out = Path(a.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    for source, scores in grader_eval.scores_by_source(res).items():
        print(f"\n{source} rows (out-of-fold):\n{grader_eval.table(scores)}")
    atomic_write_text(out / "report.json", dumps(res.report, indent=1))
    cols = [res.names.index(n) for n in res.names if n in res.heads.heads]
    grader_eval.reliability_plot(res.oof[:, cols].float(), res.labels[:, cols], out / "reliability.png",
                                 title=f"trained heads, out-of-fold ({len(rows)} rows)")
    print(f"trained {len(res.heads.heads)} heads ({len(res.heads.priors)} priors) on {len(rows)} rows in "
          f"{time.perf_counter() - t:.0f} s; wrote {a.out} and {out}/report.json")
    return 0


def _teacher(a: argparse.Namespace, student: Grader, spec: RuleSpec) -> Grader:
    """A heads file: the student's model with those heads; a URL: a served model asked zero-shot
    (``Grader.from_server``); else a causal LM asked zero-shot."""
    if served_grader_url(a.teacher):
        return load_grader(spec, a.teacher, max_length=a.max_length)
    if a.teacher.endswith(".safetensors"):
        return Grader(student.model, student.tokenizer, spec, token_budget=a.token_budget,
                      max_length=a.max_length, heads=a.teacher)
    return Grader.from_pretrained(a.teacher, gguf_file=a.teacher_gguf_file, dtype=a.dtype, device=a.device,
                                  spec=spec, token_budget=a.token_budget)


def register(sub) -> None:
    t = sub.add_parser("train-grader", help="train proposition heads (cross-validated, calibrated) for a grader")
    t.add_argument("--data", action="append", help="labelled jsonl in the gold format (repeatable); added to the "
                                                   "shipped training data when the spec is the default")
    t.add_argument("--no-shipped-data", action="store_true", help="train on --data only")
    t.add_argument("--teacher", help="a grader whose P(yes) labels what people did not: a causal LM (folder or hub "
                                     "id, asked zero-shot), a served model's URL (as for --model; asked zero-shot, "
                                     "its grades cached) or a heads .safetensors for --model")
    t.add_argument("--teacher-gguf-file", help="GGUF file name inside --teacher")
    t.add_argument("--out", default=default_output("heads.safetensors"), help="heads file to write")
    t.add_argument("--report-dir", default=default_output("grader_train"), help="report.json and reliability.png go here")
    t.add_argument("--cache-dir", help="hidden-state feature cache (default: $RBR_FAST_CACHE/features)")
    t.add_argument("--layers", help="comma-separated decoder layers to choose from (default: ~0.7 of the depth)")
    t.add_argument("--l2", type=_floats, default=(0.3,), help="comma-separated L2 strengths to choose from, heads of "
                                                              "questions about the reply")
    t.add_argument("--request-l2", type=_floats, default=(0.3,), help="the same for questions about the request")
    t.add_argument("--kinds", type=_kinds, default=("linear",), help="linear and/or mlp")
    t.add_argument("--folds", type=number(int, 2), default=5)
    t.add_argument("--min-positives", type=number(int, 1), default=10,
                   help="fewest yes (and no) labels for a head; fewer: a prior")
    t.add_argument("--no-source-balance", action="store_true",
                   help="weigh rows equally (default: every data source labelling a proposition weighs the same)")
    t.add_argument("--seed", type=int, default=0)
    add_model_args(t)
    t.set_defaults(func=run)


def _floats(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(not x > 0 for x in out):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return out


def _kinds(text: str) -> tuple[str, ...]:
    out = tuple(x.strip() for x in text.split(","))
    if not out or any(k not in ("linear", "mlp") for k in out):
        raise argparse.ArgumentTypeError(f"expected linear and/or mlp, got {text!r}")
    return out
