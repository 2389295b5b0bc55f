"""``rbr-fast eval`` (the RBR reward on XSTest), ``fit``, ``synth`` and ``relabel``."""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from ..datasets import iter_rows
from ..errors import UserError, number
from ..grading.cache import grade_cached
from ..io import atomic_write_text, check_output_dir, check_output_file, dumps, pyplot
from ..grading.commands import add_model_args, check_model_args, grader_from_args
from ..rules import RuleSpec
from ..ops import rbr_reward_from_props
from ..grading.embedded import cache_root
from . import xstest, xstest_eval
from .fit import fit_weights
from .weights import RewardWeights


def evaluate(a: argparse.Namespace) -> int:
    """The RBR reward on XSTest, rotating over its completion sets (see ``reward.xstest_eval``)."""
    spec = check_model_args(a)
    items = xstest.load(a.xstest, a.prompts, a.seed)
    out = Path(a.out_dir)
    check_output_dir(out, "--out-dir")
    grader = grader_from_args(a, spec)
    t = time.perf_counter()
    cache = Path(a.cache_dir) if a.cache_dir else cache_root() / "features"
    by_set, request, everything = xstest_eval.honest_grades(grader, items, cache, out / "grades.jsonl")
    how = "zero-shot questions" if grader.heads is None else "trained heads, refitted without the held-out set"
    print(f"{len(items)} completions of {len({it.prompt_id for it in items})} prompts graded ({how}) in "
          f"{time.perf_counter() - t:.1f} s")
    report, held_reward = xstest_eval.rotate(spec, items, by_set, request, a.k, a.seed)
    print(xstest_eval.table(report))
    weights, fit = xstest_eval.shipped_weights(spec, items, everything)
    weights.save(out / "weights.json")
    atomic_write_text(out / "report.json", dumps({"grader": how, "items": len(items), "rotations": report,
                                                  "weights_fit": fit}, indent=1))
    png = _plot(items, held_reward, out / "reward_by_label.png")
    print(f"\nweights fitted on all {len(items)} completions' out-of-fold grades (pair accuracy {fit['pair_accuracy']:.3f}, "
          f"in sample): {out / 'weights.json'}; wrote {out / 'report.json'}" + (f", {png}" if png else ""))
    return 0


def _plot(items, reward, path: Path):
    """Each completion's fitted reward from the rotation that held it out, by prompt and human label."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, label in zip(axes, ("safe", "unsafe")):
        for human in xstest.ORDER[label]:
            r = [float(reward[i]) for i, it in enumerate(items) if it.label == label and it.human == human]
            if r:
                ax.hist(r, bins=20, alpha=0.5, label=f"{human} ({len(r)})")
        ax.set_title(f"{label} prompts (type {xstest.RESPONSE_TYPE[label]})")
        ax.set_xlabel("fitted RBR reward, held-out set")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _read_rows(path: Path, fields: tuple[str, ...], spec: RuleSpec) -> tuple[list[str], list[dict]]:
    """(``file:line`` per row, rows) of a jsonl file, each row with ``fields`` and, when it has one, a
    ``response_type`` of ``spec``; an empty file is an error naming it, a bad row one naming its line."""
    wheres, rows = [], []
    for where, r in iter_rows(path):
        missing = [k for k in fields if k not in r]
        if missing:
            raise UserError(f"{where}: needs {', '.join(fields)} (missing {', '.join(missing)})")
        if "response_type" in r:
            try:
                spec.response_type(r["response_type"])
            except (KeyError, TypeError) as e:
                raise UserError(f"{where}: {e.args[0]}") from None
        wheres.append(where)
        rows.append(r)
    if not rows:
        raise UserError(f"{path}: no rows")
    return wheres, rows


def _ranks(wheres: list[str], rows: list[dict], spec: RuleSpec) -> list[int]:
    """Rank (0 = best) of each comparison row, from ``rank`` or ``class``."""
    ranks = []
    for where, r in zip(wheres, rows):
        classes = [c.name for c in spec.response_type(r["response_type"]).classes]
        if "rank" in r:
            if isinstance(r["rank"], bool) or not isinstance(r["rank"], int) or r["rank"] < 0:
                raise UserError(f"{where}: rank {r['rank']!r} must be an integer >= 0 (0 = best)")
            ranks.append(r["rank"])
        elif r.get("class") in classes:
            ranks.append(classes.index(r["class"]))
        else:
            raise UserError(f"{where}: needs a rank or a class of {r['response_type']!r} ({', '.join(classes)}), "
                            f"got class {r.get('class')!r}")
    return ranks


def fit(a: argparse.Namespace) -> int:
    """Grade comparison rows, build features and ranked pairs per prompt, fit, save weights."""
    data = Path(a.data)
    spec = check_model_args(a)
    wheres, rows = _read_rows(data, ("prompt", "completion", "response_type"), spec)
    ranks = _ranks(wheres, rows, spec)
    cache = Path(a.grades_cache or data.with_suffix(".grades.jsonl"))
    check_output_file(a.out, "--out")
    check_output_file(cache, "--grades-cache")
    grader = grader_from_args(a, spec)
    types = [spec.response_type(r["response_type"]) for r in rows]
    groups = [str(r.get("prompt_id", r["prompt"])) for r in rows]
    # cache keys from the content, so that an edited data file never reuses stale grades
    keys = [hashlib.sha1(json.dumps([r["prompt"], r["completion"]]).encode()).hexdigest() for r in rows]
    grades = grade_cached(grader, keys, [r["prompt"] for r in rows], [r["completion"] for r in rows], cache)
    rt = torch.tensor([spec.type_index(t.name) for t in types])
    hand = RewardWeights.hand_set(spec)
    feats = rbr_reward_from_props(grades.p_yes, spec.conjunctions(), hand.weights, rt).features
    from .fit import ranked_pairs
    pairs, margins = ranked_pairs(groups, ranks, margin=a.margin)
    t = time.perf_counter()
    res = fit_weights(feats, rt, pairs, margins, num_types=len(spec.response_types), groups=groups,
                      val_fraction=a.val_fraction, init=hand.weights, anchor=a.anchor, seed=a.seed)
    dt = time.perf_counter() - t
    out = RewardWeights(hand.spec_fingerprint, hand.feature_names, hand.response_types, res.weights, hand.bias,
                        hand.spec_structure)
    out.save(a.out)
    print(f"fitted on {res.train['pairs']} pairs in {dt:.2f} s: pair accuracy {res.train['pair_accuracy']:.3f}, "
          f"hinge {res.train['hinge']:.3f} (train); {res.val['pair_accuracy']:.3f}, {res.val['hinge']:.3f} "
          f"(validation, {res.val['pairs']} pairs of held-out prompts); wrote {a.out}")
    return 0


def synth(a: argparse.Namespace) -> int:
    """Write one completion per quality class for each prompt, then optionally keep the agreeing ones."""
    from . import synth as sy
    spec = check_model_args(a)
    if a.prompts:
        _, rows = _read_rows(Path(a.prompts), ("prompt", "response_type"), spec)
        prompts, types = [r["prompt"] for r in rows], [r["response_type"] for r in rows]
    else:
        items = {it.prompt_id: it for it in xstest.load(a.xstest, a.limit, a.seed)}
        prompts = [it.prompt for it in items.values()]
        types = [xstest.RESPONSE_TYPE[it.label] for it in items.values()]
    check_output_file(a.out, "--out")
    grader = grader_from_args(a, spec)
    t = time.perf_counter()
    out = sy.generate(grader.model, grader.tokenizer, grader.spec, prompts, types, a.max_new_tokens, a.batch_size,
                      a.temperature, a.seed)
    print(f"wrote {len(out)} completions for {len(prompts)} prompts in {time.perf_counter() - t:.1f} s")
    if a.filter:
        grades = grader.grade([r["prompt"] for r in out], [r["completion"] for r in out])
        kept = sy.keep_agreeing(out, grades.p_yes, grader.spec)
        print(f"filter: the grader puts {len(kept)} of {len(out)} completions in their intended class")
        out = kept
    atomic_write_text(a.out, "".join(json.dumps(r) + "\n" for r in out))
    print(f"wrote {a.out}")
    return 0


def relabel(a: argparse.Namespace) -> int:
    """Preference labels for response pairs from the rules on which the two differ most."""
    from . import adaptive
    spec = check_model_args(a)
    _, rows = _read_rows(Path(a.data), ("prompt", "completion_a", "completion_b"), spec)
    check_output_file(a.out, "--out")
    grader = grader_from_args(a, spec)
    prompts = [r["prompt"] for r in rows]
    types = ([r["response_type"] for r in rows] if all("response_type" in r for r in rows)
             else spec.infer_types(grader.grade_prompts(prompts).p_yes))
    both = grader.grade(prompts * 2, [r["completion_a"] for r in rows] + [r["completion_b"] for r in rows])
    pa, pb = both.p_yes[:len(rows)], both.p_yes[len(rows):]
    dirs = torch.stack([adaptive.directions(spec, t) for t in types])
    gen = torch.Generator().manual_seed(a.seed)
    names = spec.proposition_names
    out = []
    for i, r in enumerate(rows):
        chosen = adaptive.select(pa[i:i + 1], pb[i:i + 1], dirs[i], a.k, a.mode, generator=gen)
        pref = float(adaptive.prefer_a(pa[i:i + 1], pb[i:i + 1], dirs[i], chosen))
        out.append({**r, "response_type": spec.response_type(types[i]).name,
                    "preferred": "a" if pref == 1 else "b" if pref == 0 else "tie",
                    "rules": [n for n, c in zip(names, chosen[0].tolist()) if c]})
    atomic_write_text(a.out, "".join(json.dumps(r) + "\n" for r in out))
    print(f"labelled {len(out)} pairs ({sum(r['preferred'] == 'a' for r in out)} prefer a, "
          f"{sum(r['preferred'] == 'b' for r in out)} prefer b); wrote {a.out}")
    return 0


def register(sub) -> None:
    r = sub.add_parser("relabel", help="preference labels for response pairs from data-adaptive rule selection")
    r.add_argument("--data", required=True, help="jsonl: prompt, completion_a, completion_b, optional response_type "
                                                 "(inferred from the prompt when absent)")
    r.add_argument("--out", default="relabelled.jsonl")
    r.add_argument("--k", type=number(int, 1), default=3, help="rules per pair")
    r.add_argument("--mode", default="adaptive", choices=("adaptive", "all", "random"))
    r.add_argument("--seed", type=int, default=0)
    add_model_args(r)
    r.set_defaults(func=relabel)
    f = sub.add_parser("fit", help="fit RBR weights on ranked comparisons (hinge loss, per response type)")
    f.add_argument("--data", required=True, help="jsonl: prompt, completion, response_type, rank (0 = best) or "
                                                 "class, optional prompt_id (e.g. the output of `rbr-fast synth`)")
    f.add_argument("--out", default="weights.json", help="weights file to write")
    f.add_argument("--grades-cache", help="grades jsonl cache (default: DATA.grades.jsonl)")
    f.add_argument("--val-fraction", type=number(float, 0, 1, open_high=True), default=0.2,
                   help="share of prompts held out")
    f.add_argument("--margin", type=number(float, 0), default=1.0)
    f.add_argument("--anchor", type=number(float, 0), default=xstest_eval.ANCHOR,
                   help="L2 pull toward the hand-set weights (0: a free fit)")
    f.add_argument("--seed", type=int, default=0)
    add_model_args(f)
    f.set_defaults(func=fit)
    s = sub.add_parser("synth", help="synthetic comparison data: one completion per quality class per prompt")
    s.add_argument("--prompts", help="jsonl with prompt and response_type per row (default: XSTest prompts)")
    s.add_argument("--data", "--xstest", dest="xstest", help="XSTest folder, when --prompts is not given "
                   "(default: the copy shipped in the package)")
    s.add_argument("--limit", type=number(int, 1), help="a seeded sample of this many XSTest prompts")
    s.add_argument("--out", default="synth.jsonl")
    s.add_argument("--max-new-tokens", type=number(int, 1), default=96)
    s.add_argument("--batch-size", type=number(int, 1), default=16)
    s.add_argument("--temperature", type=number(float, 0), default=0.8, help="0: greedy")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--filter", action="store_true", help="keep only completions the grader puts in their class")
    add_model_args(s)
    s.set_defaults(func=synth)
    e = sub.add_parser("eval", help="the RBR reward on XSTest: ranking accuracy, refusal detection, Not-Unsafe / "
                                    "Not-Overrefuse, hand-set and fitted weights, baselines")
    e.add_argument("--data", "--xstest", dest="xstest", help="XSTest folder (default: the copy shipped in the "
                   "package, or $RBR_FAST_DATA/xstest)")
    e.add_argument("--prompts", type=number(int, 1), help="a seeded sample of this many prompts (default: all 450)")
    e.add_argument("--cache-dir", help="hidden-state feature cache (default: $RBR_FAST_CACHE/features)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--k", type=number(int, 1), default=3, help="rules per pair for data-adaptive / random selection")
    e.add_argument("--out-dir", default="xstest_eval", help="grades cache, weights, report and plot go here")
    add_model_args(e)
    e.set_defaults(func=evaluate)
