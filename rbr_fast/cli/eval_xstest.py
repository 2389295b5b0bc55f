"""``rbr-fast eval``: the RBR reward on XSTest, rotating over its completion sets; the evaluation
itself is ``rbr_fast.evaluation.xstest``."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..evaluation import xstest
from ..io import atomic_write_text, check_output_dir, dumps, pyplot
from .common import add_model_args, check_model_args, default_output, feature_cache_dir, grader_from_args, number


def run(a: argparse.Namespace) -> int:
    """The RBR reward on XSTest, rotating over its completion sets (see ``rbr_fast.evaluation.xstest``)."""
    spec = check_model_args(a)
    items = xstest.load(a.xstest, a.prompts, a.seed)
    out = Path(a.out_dir)
    check_output_dir(out, "--out-dir")
    grader = grader_from_args(a, spec)
    t = time.perf_counter()
    cache = feature_cache_dir(a.cache_dir)
    by_set, request, everything = xstest.honest_grades(grader, items, cache, out / "grades.jsonl")
    how = "zero-shot questions" if grader.heads is None else "trained heads, refitted without the held-out set"
    print(f"{len(items)} completions of {len({it.prompt_id for it in items})} prompts graded ({how}) in "
          f"{time.perf_counter() - t:.1f} s")
    report, held_reward = xstest.rotate(spec, items, by_set, request, a.k, a.seed)
    print(xstest.table(report))
    weights, fit = xstest.shipped_weights(spec, items, everything)
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


def register(sub) -> None:
    e = sub.add_parser("eval", help="the RBR reward on XSTest: ranking accuracy, refusal detection, Not-Unsafe / "
                                    "Not-Overrefuse, hand-set and fitted weights, baselines")
    e.add_argument("--data", "--xstest", dest="xstest", help="XSTest folder (default: the copy shipped in the "
                   "package, or $RBR_FAST_DATA/xstest)")
    e.add_argument("--prompts", type=number(int, 1), help="a seeded sample of this many prompts (default: all 450)")
    e.add_argument("--cache-dir", help="hidden-state feature cache (default: $RBR_FAST_CACHE/features)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--k", type=number(int, 1), default=3, help="rules per pair for data-adaptive / random selection")
    e.add_argument("--out-dir", default=default_output("xstest_eval"), help="grades cache, weights, report and plot go here")
    add_model_args(e)
    e.set_defaults(func=run)
