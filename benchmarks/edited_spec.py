"""A user's edited rule spec on conversations no head saw: does editing one rule keep every other head?

Heads are trained (the shipped recipe and data) without half of the RBR gold conversations; that
half is then graded through the public path, ``Grader.default(spec=...)`` with those heads, once
with the default spec and once with a copy whose ``apology`` question is reworded (same name, new
definition). Printed: per proposition, the held-out AUROC under both specs and how each was
answered; the mean over the untouched propositions; the warning the edited spec raised.

    python benchmarks/edited_spec.py [--out-dir edited_spec]

Features come from the feature cache (``$RBR_FAST_CACHE/features``), so after ``rbr-fast
train-grader`` or ``eval-grader`` only the grading itself runs (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from rbr_fast import data
from rbr_fast import metrics
from rbr_fast.grading import Grader, embedded
from rbr_fast.data.labelled import default_rows, read_labelled
from rbr_fast.evaluation.response_types import half
from rbr_fast.grading.train import train
from rbr_fast.rules import DEFAULT_SPEC, RuleSpec

EDIT = ("Does the reply contain an apology, such as \"I'm sorry\" or \"I apologize\"?",
        "Does the reply say sorry to the user in any form?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default="edited_spec")
    a = ap.parse_args()
    spec = RuleSpec.default()
    text = DEFAULT_SPEC.read_text(encoding="utf-8")
    assert EDIT[0] in text
    edited = RuleSpec.from_yaml(text.replace(*EDIT), "edited_spec.yaml")
    gold = read_labelled(data.gold(), spec, "gold")
    held = [r for r in gold if half(r.group) == 0]
    held_keys = {r.key for r in held}
    heldconv = {r.group.split(":", 1)[1] for r in held}
    pool = [r for r in default_rows(spec) if r.key not in held_keys and r.group.split(":", 1)[1] not in heldconv]
    base = Grader.default(dtype="float32", device="cpu", trained=False, progress=False)
    res = train(base, pool, embedded.cache_root() / "features", log=lambda _: None)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heads = res.heads.save(out / "heads_without_held_out_gold.safetensors")
    names = spec.proposition_names
    y = torch.tensor([[r.labels[n] for n in names] for r in held])
    scores, by = {}, {}
    for which, s in (("default", spec), ("edited", edited)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            g = Grader(base.model, base.tokenizer, s, heads=heads, progress=False)
        by[which] = g.answered_by
        p = g.grade([r.conversation for r in held], [r.completion for r in held], names).p_yes
        scores[which] = {x.name: x.auroc for x in metrics.score(names, p, y)}
        if which == "edited":
            print("warning at load:", " | ".join(str(w.message) for w in seen))
    untouched = [n for n in names if n != "apology" and scores["default"][n] == scores["default"][n]]
    print(f"{len(held)} held-out gold completions (half 0 of the gold conversations)")
    print(f"{'proposition':40s} {'default':>8s} {'edited':>8s}  answered by (edited)")
    for n in names:
        print(f"{n:40s} {scores['default'][n]:8.3f} {scores['edited'][n]:8.3f}  {by['edited'][n]}")
    mean = {k: sum(v[n] for n in untouched) / len(untouched) for k, v in scores.items()}
    print(f"mean over the {len(untouched)} untouched propositions with both answers: default {mean['default']:.3f}, "
          f"edited {mean['edited']:.3f} (loss {mean['default'] - mean['edited']:.3f})")
    (out / "edited_spec.json").write_text(json.dumps({"scores": scores, "answered_by": by, "untouched_mean": mean},
                                                     indent=1))


if __name__ == "__main__":
    main()
