"""``rbr-fast grade``, ``rbr-fast eval-grader`` and ``rbr-fast train-grader``."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

import torch

from .. import data
from ..datasets import MODELS, Example, read_jsonl
from ..errors import UserError, number
from ..io import atomic_write_text, check_model_location, check_output_dir, check_output_file, dumps
from ..rules import LOW_CONFIDENCE, RuleSpec, resolve_spec
from . import evaluate, request_types
from .feature_cache import FeatureCache
from .grader import Grader, Grades, load_grader, resolve_dtype, served_grader_url
from .labelled import LabelledRow, default_rows, read_labelled
from .train import default_layer, recipe, teacher_labels, train


def _dtype(name: str) -> str:
    try:
        resolve_dtype(name, torch.device("cpu"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="transformers model folder or hub id, or a served grader's OpenAI-compatible URL "
                                   "(http://HOST:PORT/v1, options after '#': #model=NAME&tokenizer=PATH&concurrency=N) "
                                   "(default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--grader-url", help="a served grader (URL as for --model) that answers the propositions without "
                                        "a trained head, and those the spec routes to it (answered_by: served)")
    p.add_argument("--gguf-file", help="GGUF file name inside --model")
    p.add_argument("--spec", help="rule spec YAML (default: the shipped safety spec)")
    p.add_argument("--dtype", type=_dtype, default="auto",
                   help="auto (bf16 on CUDA/AMX, else fp32), float32, bfloat16, float16")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--token-budget", type=number(int, 1), default=8192, help="most tokens in one forward pass")
    p.add_argument("--max-length", type=number(int, 1),
                   help="longest prompt; longer conversations are cut from the left")
    p.add_argument("--few-shot", action="store_true", help="show each proposition's examples before its question")
    p.add_argument("--heads", help="trained proposition heads (safetensors from `rbr-fast train-grader`) for --model "
                                   "(default: the shipped heads with the embedded model and the default spec)")
    p.add_argument("--zero-shot", action="store_true", help="ask every question; no trained heads")
    p.add_argument("--ask-rare", action="store_true",
                   help="ask the propositions with too few labels for a head instead of answering their prior")


def _add_rows_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=number(int, 1), help="grade only the first N rows")
    p.add_argument("--propositions", help="comma-separated subset of the spec's propositions")


def check_model_args(a: argparse.Namespace) -> RuleSpec:
    """The rule spec of ``add_model_args`` options, checked with ``--model`` before any model loads."""
    if a.model:
        check_model_location(a.model, "--model")
    if a.heads and a.zero_shot:
        raise UserError("--heads and --zero-shot exclude each other")
    if a.heads and not Path(a.heads).is_file():
        raise UserError(f"--heads {a.heads}: no such file")
    return resolve_spec(a.spec)


def grader_from_args(a: argparse.Namespace, spec: Optional[RuleSpec] = None) -> Grader:
    """The grader of ``add_model_args`` options (``spec``: the one ``check_model_args`` returned)."""
    spec = spec or resolve_spec(a.spec)
    kw = dict(token_budget=a.token_budget, max_length=a.max_length, few_shot=a.few_shot,
              priors=not a.ask_rare)
    if a.heads:
        kw["heads"] = a.heads
    if not a.model:
        kw["trained"] = not a.zero_shot
    return load_grader(spec, a.model, gguf_file=a.gguf_file, dtype=a.dtype, device=a.device,
                       grader_url=a.grader_url, **kw)


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
    rows, spec, props = inputs
    grades = _timed(grader_from_args(a, spec), [r.conversation for r in rows], [r.completion for r in rows], props)
    _write_jsonl(out, grades)
    print(f"wrote {out}")
    return 0


def eval_grader(a: argparse.Namespace) -> int:
    """Accuracy per proposition against human labels. A trained grader is scored by grouped
    cross-validation (``cross_validated``): no row is scored by a head that was trained on it."""
    path = Path(a.data) if a.data else data.gold()
    rows, spec, props = _inputs(a, path)
    missing = sorted({n for r in rows for n in props or spec.proposition_names if n not in r.labels})
    if missing:
        raise UserError(f"{path}: rows have no human label for {missing}; eval-grader needs a 'propositions' "
                        "dict per row (like the shipped RBR gold set)")
    check_output_dir(a.out_dir, "--out-dir")
    grader = grader_from_args(a, spec)
    names = props or spec.proposition_names
    convs, comps = [r.conversation for r in rows], [r.completion for r in rows]
    how = "zero-shot questions"
    heads = None
    if grader.heads is None:
        grades = _timed(grader, convs, comps, names)
    else:
        how = "trained heads, grouped 5-fold cross-validation"
        grades, heads = cross_validated(grader, read_labelled(path, spec, limit=a.limit), names, _cache_root(a), print)
    labels = torch.tensor([[r.labels[n] for n in grades.propositions] for r in rows])
    scores = evaluate.score(grades.propositions, grades.p_yes, labels)
    print(f"{path.name}: {len(rows)} completions, {how}")
    print(evaluate.table(scores, grader.answered_by))
    by_type = {}
    for t in sorted({r.response_type for r in rows if r.response_type}):
        keep = torch.tensor([r.response_type == t for r in rows])
        by_type[t] = evaluate.means(evaluate.score(grades.propositions, grades.p_yes[keep], labels[keep]))
    if by_type:
        print("\nper response type (mean over propositions with >= 5 yes and 5 no labels among its rows):")
        for t, m in by_type.items():
            print(f"  {t:16s} rows {sum(r.response_type == t for r in rows):4d}  auroc {m['yes>=5']['auroc']:.3f}  "
                  f"balanced accuracy {m['yes>=5']['balanced_accuracy']:.3f}")
    written = None
    if heads is not None and not a.data:  # replies written for the rare propositions, never trained on
        test = [r for r in read_labelled(data.written_rare("test"), spec, "written") if r.labels]
        held = [n for n in names if n in heads.heads and any(n in r.labels for r in test)]
        if test and held:
            feats = FeatureCache(_cache_root(a), grader, heads.layers).get([r.conversation for r in test],
                                                                          [r.completion for r in test])
            y = torch.tensor([[r.labels.get(n, float("nan")) for n in held] for r in test])
            written = evaluate.score(held, heads.predict(feats, held), y)
            print(f"\n{data.written_rare('test').name} ({len(test)} written replies no head was trained on):")
            print(evaluate.table(written))
    types = None
    if grader.heads is not None and grader.spec.prompt_propositions and not a.data:
        rec = recipe(grader.heads.report.get("layers") or [default_layer(grader.model.config.num_hidden_layers)])
        types = request_types.cross_set(grader, _cache_root(a), lambda rs: train(grader, rs, _cache_root(a), rec,
                                                                                log=lambda _: None).heads,
                                        LOW_CONFIDENCE)
        print("\nresponse-type inference on prompts the request heads were not fitted on:")
        print(request_types.table(types))
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scores.json", dumps({"grader": how, "answered_by": grader.answered_by,
                                                  **evaluate.summary(scores), "by_response_type": by_type,
                                                  "written_test": evaluate.summary(written) if written else None,
                                                  "type_inference": types}, indent=1))
    _write_jsonl(out / "grades.jsonl", grades)
    png = evaluate.reliability_plot(grades.p_yes, labels, out / "reliability.png",
                                    title=f"grader calibration on {path.name} ({len(rows)} completions)")
    print(f"wrote {out / 'scores.json'}, {out / 'grades.jsonl'}"
          + (f", {png}" if png else " (no reliability plot: matplotlib is not installed)"))
    return 0


def cross_validated(grader: Grader, rows: list[LabelledRow], names: list[str], cache_root, log):
    """(Grades of ``rows`` by a trained grader that never saw them, the heads trained on all of the
    pool): heads are retrained (same layers) by grouped cross-validation over ``rows``, plus the
    shipped training data when the grader's heads were trained on it (a row in both counts once,
    with the evaluated row's labels), each row scored by the fold that held it out; priors and
    questions answer the rest as the grader does."""
    spec = grader.spec
    shipped = set(grader.heads.report.get("sources", {})) & {"gold", *(f"xstest/{m}" for m in MODELS)}
    extra = default_rows(spec) if shipped else []
    mine = {r.key for r in rows}
    pool = rows + [r for r in extra if r.key not in mine]
    res = train(grader, pool, cache_root, recipe(grader.heads.report.get("layers") or
                                                 [default_layer(grader.model.config.num_hidden_layers)]), log=log)
    p_yes = torch.empty(len(rows), len(names))
    mass = torch.ones(len(rows), len(names))
    rest = [n for n in names if n not in res.heads.heads]
    if rest:  # what the grader does for names without a head: its prior, or the question
        g = grader.grade([r.conversation for r in rows], [r.completion for r in rows], rest)
        p_yes[:, [names.index(n) for n in rest]] = g.p_yes
        mass[:, [names.index(n) for n in rest]] = g.mass
    for n in names:
        if n in res.heads.heads:
            p_yes[:, names.index(n)] = res.oof[:len(rows), res.names.index(n)].float()
    return Grades(p_yes, mass, names), res.heads


def _timed(grader: Grader, convs, comps, names) -> Grades:
    t = time.perf_counter()
    grades = grader.grade(convs, comps, names)
    dt = time.perf_counter() - t
    print(f"graded {len(convs)} completions x {len(grades.propositions)} propositions in {dt:.1f} s: "
          f"{len(convs) / dt:.2f} completions/s ({grader.truncated} cut to max_length={grader.max_length})")
    return grades


def _cache_root(a: argparse.Namespace) -> Path:
    from .embedded import cache_root
    return Path(getattr(a, "cache_dir", None) or cache_root() / "features")


def train_grader(a: argparse.Namespace) -> int:
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
    check_output_file(a.out, "--out")
    check_output_dir(a.report_dir, "--report-dir")
    layers = [int(x) for x in a.layers.split(",")] if a.layers else None
    grader = grader_from_args(argparse.Namespace(**{**vars(a), "zero_shot": True, "heads": None}), spec)
    cache = _cache_root(a)
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
    scored = [n for n in res.names if n in res.heads.heads]
    cols = [res.names.index(n) for n in scored]
    lines = []
    for source in sorted({r.source.split("/")[0] for r in res.rows}):  # honest scores per data source
        keep = torch.tensor([r.source.split("/")[0] == source for r in res.rows])
        sc = evaluate.score(scored, res.oof[keep][:, cols], res.labels[keep][:, cols])
        sc = [s for s in sc if s.n and s.positives and s.positives < s.n]
        if sc:
            lines += [f"\n{source} rows (out-of-fold):", evaluate.table(sc)]
    print("\n".join(lines))
    atomic_write_text(out / "report.json", dumps(res.report, indent=1))
    evaluate.reliability_plot(res.oof[:, cols].float(), res.labels[:, cols], out / "reliability.png",
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
    e.add_argument("--cache-dir", help="hidden-state feature cache (default: $RBR_FAST_CACHE/features)")
    add_model_args(e)
    _add_rows_args(e)
    e.set_defaults(func=eval_grader)
    t = sub.add_parser("train-grader", help="train proposition heads (cross-validated, calibrated) for a grader")
    t.add_argument("--data", action="append", help="labelled jsonl in the gold format (repeatable); added to the "
                                                   "shipped training data when the spec is the default")
    t.add_argument("--no-shipped-data", action="store_true", help="train on --data only")
    t.add_argument("--teacher", help="a grader whose P(yes) labels what people did not: a causal LM (folder or hub "
                                     "id, asked zero-shot), a served model's URL (as for --model; asked zero-shot, "
                                     "its grades cached) or a heads .safetensors for --model")
    t.add_argument("--teacher-gguf-file", help="GGUF file name inside --teacher")
    t.add_argument("--out", default="heads.safetensors", help="heads file to write")
    t.add_argument("--report-dir", default="grader_train", help="report.json and reliability.png go here")
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
    t.set_defaults(func=train_grader)


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
