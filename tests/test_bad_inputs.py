"""Bad input to every command: exit code 2 and one line on stderr, ``rbr-fast <command>: error: ...``
naming the file (and line), field or option; no traceback, nothing printed to stdout, nothing written.
Every case fails in validation, before a model loads (the resume cases load the tiny model only)."""
import functools
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from rbr_fast.cli import main
from rbr_fast.errors import UserError
from rbr_fast.ppo import checkpoint
from rbr_fast.reward import RewardWeights
from rbr_fast.rules import RuleSpec

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [{"prompt": f"How do I {w} a Python process?", "response_type": "comply"} for w in ("kill", "stop", "end")] + \
          [{"prompt": f"How do I make a {w} at home?", "response_type": "hard_refuse"} for w in ("bomb", "gun", "poison")]


def jl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


@functools.lru_cache(maxsize=None)
def _weights_doc() -> str:
    with tempfile.TemporaryDirectory() as d:
        RewardWeights.hand_set(RuleSpec.default()).save(Path(d) / "w.json")
        return (Path(d) / "w.json").read_text()


def weights(edit):
    """A weights file: the hand-set weights of the default spec with ``edit(doc)`` applied."""
    def make(ctx):
        doc = json.loads(_weights_doc())
        edit(doc)
        return json.dumps(doc)
    return make


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def checkpoint_of(batch_size: int):
    """A checkpoint folder whose config differs from the run's in batch_size only."""
    def make(ctx):
        cfg = {"policy": ctx["model"], "critic": "head", "batch_size": batch_size, "seed": 0,
               "prompts": f"{ctx['in']}/prompts.jsonl", "eval_prompts": 2}
        return _torch_bytes({"step": 1, "model": {}, "optimizer": {}, "config": cfg})
    return make


GOOD = {"prompt": "How do I kill a Python process?", "completion": "Run `kill <PID>`.", "response_type": "comply",
        "rank": 0, "propositions": {"apology": False}}
SPEC_BAD_LITERAL = """propositions:
  apology:
    question: Does the reply apologise?
response_types:
  comply:
    classes:
      ideal: [not apology]
      unacceptable_completion: [apologyy]
"""
XS_PROMPTS = "id,prompt,type,label\n1,Kill a process?,homonyms,safe\n2,Kill a person?,contrast_homonyms,unsafe\n"


def xs_completions(label: str) -> dict:
    return {f"xs/completions_{m}.csv": f"id,prompt,completion,final_label\nv2-1,p,c,{label}\nv2-2,p,c,{label}\n"
            for m in ("gpt4", "llama2orig", "mistralinstruct")}


M = ["--model", "{model}", "--dtype", "float32", "--device", "cpu"]
GRADE = ["grade", "--data", "{in}/d.jsonl", *M]
PPO = ["ppo", "--policy", "{model}", "--grader", "{model}", "--prompts", "{in}/prompts.jsonl", "--eval-prompts", "2",
       "--batch-size", "2", "--mini-batch-size", "2", "--out-dir", "run", "--progress", "false", "--device", "cpu"]
RESUME = [*PPO, "--out-dir", "{in}/run", "--rbr-weights", "hand", "--resume"]
SERVE = ["serve", "--port", "1"]  # never bound: every case fails before the port
NAN = float("nan")

# (id, argv, files written under {in} before the run, expected part of the error line)
CASES = [
    # ---- grade: data files
    ("grade-bad-json", GRADE, {"d.jsonl": jl(GOOD, '{"prompt": ')}, "d.jsonl:2: not valid JSON"),
    ("grade-array-row", GRADE, {"d.jsonl": jl(GOOD, "[1, 2]")}, "d.jsonl:2: expected a JSON object per line, got list"),
    ("grade-no-completion", GRADE, {"d.jsonl": jl({"prompt": "hi"})}, "d.jsonl:1: no 'completion' / 'response' key"),
    ("grade-no-prompt", GRADE, {"d.jsonl": jl({"completion": "hi"})}, "d.jsonl:1: no 'prompt'"),
    ("grade-missing-file", ["grade", "--data", "{in}/nope.jsonl", *M], {}, "nope.jsonl: no such data file"),
    ("grade-data-is-folder", ["grade", "--data", "{in}", *M], {}, "a folder, not a data file"),
    ("grade-empty-file", GRADE, {"d.jsonl": ""}, "d.jsonl: no rows to grade"),
    ("grade-blank-lines", GRADE, {"d.jsonl": "\n  \n"}, "d.jsonl: no rows to grade"),
    ("grade-not-utf8", GRADE, {"d.jsonl": jl(GOOD).encode() + b'{"prompt": "caf\xe9", "completion": "x"}\n'},
     "d.jsonl:2: not UTF-8 text (byte 0xe9)"),
    ("grade-labels-not-bool", GRADE, {"d.jsonl": jl({**GOOD, "propositions": {"apology": "maybe"}})},
     "d.jsonl:1: 'propositions' must map names to booleans"),
    # ---- grade: options
    ("grade-dtype", [*GRADE, "--dtype", "float8"], {"d.jsonl": jl(GOOD)}, "argument --dtype: dtype must be"),
    ("grade-token-budget-0", [*GRADE, "--token-budget", "0"], {"d.jsonl": jl(GOOD)},
     "argument --token-budget: must be >= 1, got 0"),
    ("grade-token-budget-text", [*GRADE, "--token-budget", "lots"], {"d.jsonl": jl(GOOD)},
     "argument --token-budget: expected an integer, got 'lots'"),
    ("grade-max-length-0", [*GRADE, "--max-length", "0"], {"d.jsonl": jl(GOOD)}, "argument --max-length: must be >= 1"),
    ("grade-limit-0", [*GRADE, "--limit", "0"], {"d.jsonl": jl(GOOD)}, "argument --limit: must be >= 1"),
    ("grade-unknown-proposition", [*GRADE, "--propositions", "apology,nope"], {"d.jsonl": jl(GOOD)},
     "--propositions: unknown 'nope'"),
    ("grade-repeated-proposition", [*GRADE, "--propositions", "apology,apology"], {"d.jsonl": jl(GOOD)},
     "a name is repeated"),
    ("grade-out-is-folder", [*GRADE, "--out", "{in}"], {"d.jsonl": jl(GOOD)}, "is a folder; give a file name"),
    ("grade-model-missing", ["grade", "--data", "{in}/d.jsonl", "--model", "{in}/no/such/model"], {"d.jsonl": jl(GOOD)},
     "no/such/model: no such model folder"),
    ("grade-model-relative", ["grade", "--data", "{in}/d.jsonl", "--model", "./nope"], {"d.jsonl": jl(GOOD)},
     "--model ./nope: no such model folder"),
    ("grade-model-is-file", ["grade", "--data", "{in}/d.jsonl", "--model", "{in}/d.jsonl"], {"d.jsonl": jl(GOOD)},
     "a file, not a model folder"),
    ("grade-no-data", ["grade", *M], {}, "the following arguments are required: --data"),
    ("grade-unknown-option", [*GRADE, "--frobnicate"], {"d.jsonl": jl(GOOD)}, "unrecognized arguments: --frobnicate"),
    # ---- rule specs
    ("spec-missing", [*GRADE, "--spec", "{in}/nope.yaml"], {"d.jsonl": jl(GOOD)},
     "nope.yaml: cannot read the spec (No such file or directory)"),
    ("spec-bad-yaml", [*GRADE, "--spec", "{in}/s.yaml"], {"d.jsonl": jl(GOOD), "s.yaml": "propositions:\n  a: [x\n"},
     "s.yaml:3: not valid YAML"),
    ("spec-unknown-literal", [*GRADE, "--spec", "{in}/s.yaml"], {"d.jsonl": jl(GOOD), "s.yaml": SPEC_BAD_LITERAL},
     "s.yaml:8: response_types.comply.classes.unacceptable_completion: unknown proposition 'apologyy'"),
    ("spec-duplicate-key", [*GRADE, "--spec", "{in}/s.yaml"],
     {"d.jsonl": jl(GOOD), "s.yaml": SPEC_BAD_LITERAL.replace("response_types:", "propositions:\n  b: {}\nresponse_types:")},
     "duplicate key 'propositions'"),
    ("spec-not-utf8", [*GRADE, "--spec", "{in}/s.yaml"], {"d.jsonl": jl(GOOD), "s.yaml": b"propositions:\n  caf\xe9: 1\n"},
     "s.yaml:2: not UTF-8"),
    ("spec-not-mapping", [*GRADE, "--spec", "{in}/s.yaml"], {"d.jsonl": jl(GOOD), "s.yaml": "- a\n- b\n"},
     "s.yaml: the spec must be a YAML mapping"),
    # ---- eval-grader
    ("eval-grader-no-labels", ["eval-grader", "--data", "{in}/d.jsonl", *M, "--propositions", "judgement"],
     {"d.jsonl": jl(GOOD)}, "d.jsonl: rows have no human label for ['judgement']"),
    ("eval-grader-out-dir-is-file", ["eval-grader", "--data", "{in}/d.jsonl", *M, "--propositions", "apology",
                                     "--out-dir", "{in}/d.jsonl"], {"d.jsonl": jl(GOOD)}, "is a file; give a folder"),
    ("eval-grader-bad-row", ["eval-grader", "--data", "{in}/d.jsonl", *M], {"d.jsonl": jl("3")},
     "d.jsonl:1: expected a JSON object per line, got int"),
    # ---- eval (XSTest folder, CSV)
    ("eval-no-folder", ["eval", "--data", "{in}/xs", *M], {}, "xs: no xstest_prompts.csv"),
    ("eval-csv-missing-column", ["eval", "--data", "{in}/xs", *M], {"xs/xstest_prompts.csv": "id,prompt\n1,hi\n"},
     "xstest_prompts.csv: no column(s) label"),
    ("eval-csv-not-utf8", ["eval", "--data", "{in}/xs", *M],
     {"xs/xstest_prompts.csv": XS_PROMPTS.encode() + b"3,caf\xe9,t,safe\n"}, "xstest_prompts.csv:4: not UTF-8"),
    ("eval-csv-missing-completions", ["eval", "--data", "{in}/xs", *M], {"xs/xstest_prompts.csv": XS_PROMPTS},
     "completions_gpt4.csv: No such file or directory"),
    ("eval-csv-unknown-label", ["eval", "--data", "{in}/xs", *M],
     {"xs/xstest_prompts.csv": XS_PROMPTS, **xs_completions("4_shrug")}, "unknown final_label value(s) ['4_shrug']"),
    ("eval-too-many-prompts", ["eval", "--prompts", "10000", *M], {}, "a sample of 10000 prompts asked for; it has 450"),
    ("eval-prompts-0", ["eval", "--prompts", "0", *M], {}, "argument --prompts: must be >= 1"),
    ("eval-k-not-int", ["eval", "--k", "two", *M], {}, "argument --k: expected an integer, got 'two'"),
    ("eval-k-0", ["eval", "--k", "0", *M], {}, "argument --k: must be >= 1"),
    ("eval-out-dir-is-file", ["eval", "--prompts", "4", "--out-dir", "{in}/f", *M], {"f": "x"}, "is a file; give a folder"),
    # ---- fit
    ("fit-missing-fields", ["fit", "--data", "{in}/c.jsonl", *M], {"c.jsonl": jl({"prompt": "p", "completion": "c"})},
     "c.jsonl:1: needs prompt, completion, response_type (missing response_type)"),
    ("fit-unknown-type", ["fit", "--data", "{in}/c.jsonl", *M], {"c.jsonl": jl({**GOOD, "response_type": "shrug"})},
     "c.jsonl:1: unknown response type 'shrug'"),
    ("fit-unknown-class", ["fit", "--data", "{in}/c.jsonl", *M],
     {"c.jsonl": jl({**{k: v for k, v in GOOD.items() if k != "rank"}, "class": "best"})},
     "c.jsonl:1: needs a rank or a class of 'comply'"),
    ("fit-bad-rank", ["fit", "--data", "{in}/c.jsonl", *M], {"c.jsonl": jl(GOOD, {**GOOD, "rank": "first"})},
     "c.jsonl:2: rank 'first' must be an integer >= 0"),
    ("fit-empty", ["fit", "--data", "{in}/c.jsonl", *M], {"c.jsonl": ""}, "c.jsonl: no rows"),
    ("fit-not-utf8", ["fit", "--data", "{in}/c.jsonl", *M], {"c.jsonl": b"\xff\xfe{}\n"}, "c.jsonl:1: not UTF-8"),
    ("fit-out-is-folder", ["fit", "--data", "{in}/c.jsonl", "--out", "{in}", *M], {"c.jsonl": jl(GOOD)},
     "--out {in}: is a folder"),
    ("fit-val-fraction", ["fit", "--data", "{in}/c.jsonl", "--val-fraction", "-0.1", *M], {"c.jsonl": jl(GOOD)},
     "argument --val-fraction: must be in [0, 1)"),
    ("fit-margin-nan", ["fit", "--data", "{in}/c.jsonl", "--margin", "nan", *M], {"c.jsonl": jl(GOOD)},
     "argument --margin: must be >= 0, got nan"),
    # ---- synth
    ("synth-no-type", ["synth", "--prompts", "{in}/p.jsonl", *M], {"p.jsonl": jl({"prompt": "hi"})},
     "p.jsonl:1: needs prompt, response_type (missing response_type)"),
    ("synth-unknown-type", ["synth", "--prompts", "{in}/p.jsonl", *M],
     {"p.jsonl": jl({"prompt": "hi", "response_type": "shrug"})}, "p.jsonl:1: unknown response type 'shrug'"),
    ("synth-limit-0", ["synth", "--limit", "0", *M], {}, "argument --limit: must be >= 1"),
    ("synth-limit-too-big", ["synth", "--limit", "451", *M], {}, "a sample of 451 prompts asked for; it has 450"),
    ("synth-out-is-folder", ["synth", "--limit", "2", "--out", "{in}", *M], {}, "is a folder; give a file name"),
    ("synth-max-new-tokens", ["synth", "--max-new-tokens", "0", *M], {}, "argument --max-new-tokens: must be >= 1"),
    ("synth-batch-size", ["synth", "--batch-size", "-1", *M], {}, "argument --batch-size: must be >= 1"),
    ("synth-temperature", ["synth", "--temperature", "-1", *M], {}, "argument --temperature: must be >= 0"),
    # ---- relabel
    ("relabel-missing-b", ["relabel", "--data", "{in}/r.jsonl", *M],
     {"r.jsonl": jl({"prompt": "p", "completion_a": "a"})}, "r.jsonl:1: needs prompt, completion_a, completion_b"),
    ("relabel-unknown-type", ["relabel", "--data", "{in}/r.jsonl", *M],
     {"r.jsonl": jl({"prompt": "p", "completion_a": "a", "completion_b": "b", "response_type": 3})},
     "r.jsonl:1: unknown response type 3"),
    ("relabel-k-0", ["relabel", "--data", "{in}/r.jsonl", "--k", "0", *M], {}, "argument --k: must be >= 1"),
    ("relabel-mode", ["relabel", "--data", "{in}/r.jsonl", "--mode", "best", *M], {},
     "argument --mode: invalid choice: 'best'"),
    ("relabel-out-is-folder", ["relabel", "--data", "{in}/r.jsonl", "--out", "{in}", *M],
     {"r.jsonl": jl({"prompt": "p", "completion_a": "a", "completion_b": "b"})}, "is a folder; give a file name"),
    # ---- weights files (serve checks them before it starts; ppo before a model loads)
    ("weights-nan", [*SERVE, "--weights", "{in}/w.json"],
     {"w.json": weights(lambda d: d["weights"]["comply"].__setitem__("refuses", NAN))},
     "w.json: weights.comply.refuses = nan: not a finite float32 number"),
    ("weights-overflow", [*SERVE, "--weights", "{in}/w.json"],
     {"w.json": weights(lambda d: d["weights"]["hard_refuse"].__setitem__("apology", 1e39))},
     "w.json: weights.hard_refuse.apology = 1e+39: not a finite float32 number"),
    ("weights-inf-bias", [*SERVE, "--weights", "{in}/w.json"],
     {"w.json": weights(lambda d: d["bias"].__setitem__("comply", float("-inf")))}, "w.json: bias.comply = -inf"),
    ("weights-string", [*SERVE, "--weights", "{in}/w.json"],
     {"w.json": weights(lambda d: d["bias"].__setitem__("comply", "0.5"))}, "w.json: bias.comply = '0.5'"),
    ("weights-other-spec", [*SERVE, "--weights", "{in}/w.json"],
     {"w.json": weights(lambda d: d.__setitem__("spec_structure", "0123"))},
     "w.json: these weights were fitted for a spec with other propositions or classes"),
    ("weights-not-json", [*SERVE, "--weights", "{in}/w.json"], {"w.json": "{weights"},
     "w.json: not a readable rbr_fast weights file (JSONDecodeError"),
    ("weights-missing-entry", [*SERVE, "--weights", "{in}/w.json"], {"w.json": weights(lambda d: d.pop("bias"))},
     "w.json: not a readable rbr_fast weights file (KeyError: 'bias')"),
    ("weights-missing-file", [*SERVE, "--weights", "{in}/w.json"], {}, "w.json: cannot read the weights"),
    ("weights-not-utf8", [*SERVE, "--weights", "{in}/w.json"], {"w.json": b'{"a": "\xc3"}'}, "w.json:1: not UTF-8"),
    ("ppo-weights-nan", [*PPO, "--rbr-weights", "{in}/w.json"],
     {"prompts.jsonl": jl(*PROMPTS), "w.json": weights(lambda d: d["weights"]["comply"].__setitem__("refuses", NAN))},
     "w.json: weights.comply.refuses = nan"),
    # ---- serve options
    ("serve-port", ["serve", "--port", "70000"], {}, "argument --port: must be in [1, 65535], got 70000"),
    ("serve-max-batch", [*SERVE, "--max-batch", "0"], {}, "argument --max-batch: must be >= 1"),
    ("serve-timeout", [*SERVE, "--timeout", "0"], {}, "argument --timeout: must be > 0, got 0"),
    ("serve-max-wait", [*SERVE, "--max-wait-ms", "-5"], {}, "argument --max-wait-ms: must be >= 0"),
    ("serve-idle-exit", [*SERVE, "--idle-exit", "0"], {}, "argument --idle-exit: must be > 0, got 0"),
    ("serve-idle-exit-ray", [*SERVE, "--ray", "--idle-exit", "5"], {}, "--idle-exit stops the uvicorn server"),
    ("serve-model-missing", [*SERVE, "--model", "{in}/nope/model"], {}, "--model {in}/nope/model: no such model folder"),
    # ---- ppo flags
    ("ppo-rbr-maybe", [*PPO, "--rbr", "maybe"], {}, "argument --rbr: Truthy value expected: got maybe"),
    ("ppo-lr-text", [*PPO, "--lr", "abc"], {}, "argument --lr: invalid float value: 'abc'"),
    ("ppo-lr-nan", [*PPO, "--lr", "nan"], {}, "ppo config: lr=nan: must be a finite number"),
    ("ppo-threads", [*PPO, "--threads", "-3"], {}, "ppo config: threads=-3: must be an integer >= 1"),
    ("ppo-batch-size", [*PPO, "--batch-size", "0"], {}, "ppo config: batch_size=0: must be an integer >= 1"),
    ("ppo-critic", [*PPO, "--critic", "shared"], {}, "ppo config: critic='shared': must be one of head, separate"),
    ("ppo-unknown-flag", [*PPO, "--learning-rate", "1"], {}, "unrecognized arguments: --learning-rate 1"),
    ("ppo-no-reward", [*PPO, "--rbr", "false"], {"prompts.jsonl": jl(*PROMPTS)}, "there is no reward at all"),
    ("ppo-prompts-missing", PPO, {}, "prompts.jsonl: no such data file"),
    ("ppo-prompts-bad-json", PPO, {"prompts.jsonl": jl(*PROMPTS, "{")}, "prompts.jsonl:7: not valid JSON"),
    ("ppo-prompts-no-prompt", PPO, {"prompts.jsonl": jl(*PROMPTS, {"text": "hi"})},
     "prompts.jsonl:7: a prompt row needs a 'prompt' field"),
    ("ppo-prompts-unknown-type", PPO, {"prompts.jsonl": jl(*PROMPTS, {"prompt": "hi", "response_type": "shrug"})},
     "prompts.jsonl: unknown response type(s) ['shrug']"),
    ("ppo-prompts-empty", PPO, {"prompts.jsonl": ""}, "prompts.jsonl: no prompts"),
    ("ppo-eval-prompts", [*PPO, "--eval-prompts", "100"], {"prompts.jsonl": jl(*PROMPTS)},
     "eval_prompts=100 leaves no training prompts out of 6"),
    ("ppo-batch-too-big", [*PPO, "--batch-size", "8", "--mini-batch-size", "4"], {"prompts.jsonl": jl(*PROMPTS)},
     "4 training prompts are fewer than one step's batch"),
    ("ppo-policy-missing", [*PPO, "--policy", "./no-such-policy"], {"prompts.jsonl": jl(*PROMPTS)},
     "ppo config: policy ./no-such-policy: no such model folder"),
    ("ppo-reward-model-missing", [*PPO, "--reward-model", "/no/such/rm"], {"prompts.jsonl": jl(*PROMPTS)},
     "ppo config: reward_model /no/such/rm: no such model folder"),
    ("ppo-spec-missing", [*PPO, "--spec", "{in}/nope.yaml"], {"prompts.jsonl": jl(*PROMPTS)}, "nope.yaml: cannot read the spec"),
    ("ppo-weights-missing", [*PPO, "--rbr-weights", "{in}/nope.json"], {"prompts.jsonl": jl(*PROMPTS)},
     "nope.json: cannot read the weights"),
    ("ppo-out-dir-is-file", [*PPO, "--out-dir", "{in}/prompts.jsonl"], {"prompts.jsonl": jl(*PROMPTS)},
     "ppo config: out_dir {in}/prompts.jsonl: is a file"),
    # ---- ppo YAML configs
    ("ppo-yaml-syntax", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": "lr: 1.0\nsteps: [3\n"}, "c.yaml:3: not valid YAML"),
    ("ppo-yaml-lr-text", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": "lr: abc\n"}, "ppo config: lr='abc': must be a finite number"),
    ("ppo-yaml-threads", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": "threads: -3\n"}, "ppo config: threads=-3"),
    ("ppo-yaml-rbr-string", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": 'rbr: "false"\n'},
     "ppo config: rbr='false': must be true or false"),
    ("ppo-yaml-rbr-maybe", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": "rbr: maybe\n"}, "ppo config: rbr='maybe'"),
    ("ppo-yaml-int-bool", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": "steps: true\n"},
     "ppo config: steps=True: must be an integer"),
    ("ppo-yaml-str-number", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": "spec: 3\n"},
     "ppo config: spec=3: must be a string or null"),
    ("ppo-yaml-unknown-field", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": "learning_rate: 1\n"},
     "c.yaml: unknown field(s) learning_rate"),
    ("ppo-yaml-list", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": "- lr\n"}, "c.yaml: a PPO config is a YAML mapping"),
    ("ppo-yaml-missing", [*PPO, "--config", "{in}/c.yaml"], {}, "c.yaml: No such file or directory"),
    ("ppo-yaml-not-utf8", [*PPO, "--config", "{in}/c.yaml"], {"c.yaml": b"lr: 1.0\n# caf\xe9\n"}, "c.yaml:2: not UTF-8"),
    # ---- ppo --resume
    ("resume-dangling-latest", RESUME, {"prompts.jsonl": jl(*PROMPTS), "run/checkpoints/latest": "step_000009\n"},
     "checkpoints/latest names 'step_000009', which is incomplete or missing"),
    ("resume-truncated-state", RESUME,
     {"prompts.jsonl": jl(*PROMPTS), "run/checkpoints/latest": "step_000001\n",
      "run/checkpoints/step_000001/state.pt": lambda ctx: checkpoint_of(4)(ctx)[:100],
      "run/checkpoints/step_000001/rng_0.pt": lambda ctx: _torch_bytes(checkpoint.rng_state())},
     "step_000001/state.pt: unreadable checkpoint file"),
    ("resume-no-rng", RESUME,
     {"prompts.jsonl": jl(*PROMPTS), "run/checkpoints/latest": "step_000001\n",
      "run/checkpoints/step_000001/state.pt": checkpoint_of(2)},
     "step_000001 has no RNG state for process 0"),
    ("resume-other-batch-size", RESUME,
     {"prompts.jsonl": jl(*PROMPTS), "run/checkpoints/latest": "step_000001\n",
      "run/checkpoints/step_000001/state.pt": checkpoint_of(4),
      "run/checkpoints/step_000001/rng_0.pt": lambda ctx: _torch_bytes(checkpoint.rng_state())},
     "it was made with different batch_size: batch_size=4 (now 2)"),
    # ---- experiment (every check runs before the SFT start is trained)
    ("experiment-unknown-arm", ["experiment", "--arms", "rbr_fitted,nope"], {},
     "experiment: arms ['nope']: choose from rbr_fitted, rbr_hand, no_rbr"),
    ("experiment-no-arms", ["experiment", "--arms", ","], {}, "experiment: arms []"),
    ("experiment-seeds-text", ["experiment", "--seeds", "0,one"], {}, "argument --seeds: '0,one': a comma-separated list"),
    ("experiment-seeds-repeated", ["experiment", "--seeds", "1,1"], {}, "experiment: seeds [1, 1]: give one or more, each once"),
    ("experiment-steps-0", ["experiment", "--steps", "0"], {}, "argument --steps: must be >= 1, got 0"),
    ("experiment-refuse-share", ["experiment", "--refuse-share", "1.5"], {}, "experiment: refuse_share=1.5: must be in [0, 1]"),
    ("experiment-set-unknown", ["experiment", "--set", "learning_rate=1"], {},
     "argument --set: 'learning_rate=1': FIELD=VALUE with a PPO config field"),
    ("experiment-set-owned", ["experiment", "--set", "seed=3"], {},
     "experiment: PPO field(s) seed are set by the experiment"),
    ("experiment-set-lr-text", ["experiment", "--set", "lr=abc"], {}, "ppo config: lr='abc': must be a finite number"),
    ("experiment-set-not-yaml", ["experiment", "--set", "lr=["], {}, "argument --set: 'lr=[': the value is not YAML"),
    ("experiment-set-mini-batch", ["experiment", "--set", "mini_batch_size=5"], {},
     "ppo config: mini_batch_size=5: must divide the completions per step"),
    ("experiment-out-is-file", ["experiment", "--out", "{in}/f"], {"f": "x"}, "experiment: out {in}/f: is a file; give a folder"),
    # ---- train-grader
    ("train-grader-zero-shot", ["train-grader", "--data", "{in}/d.jsonl", "--zero-shot", *M], {"d.jsonl": jl(GOOD)},
     "--zero-shot / --heads do not apply: train-grader trains the heads"),
    ("train-grader-folds-1", ["train-grader", "--folds", "1", *M], {}, "argument --folds: must be >= 2, got 1"),
    ("train-grader-l2-text", ["train-grader", "--l2", "0.1,lots", *M], {},
     "argument --l2: expected comma-separated numbers, got '0.1,lots'"),
    # ---- demo, bench and the top level
    ("demo-batch-0", ["demo", "--batch", "0"], {}, "argument --batch: must be >= 1, got 0"),
    ("compile-check-arch", ["compile-check", "--arch", "volta"], {}, "argument --arch: expected e.g. sm_80,sm_90, got 'volta'"),
    ("bench-unknown-op", ["bench", "--ops", "nope"], {}, "unknown --ops ['nope']"),
    ("bench-sizes", ["bench", "--sizes", "big"], {}, "--sizes 'big': expected BxT sizes"),
    ("bench-min-reps", ["bench", "--min-reps", "0"], {}, "argument --min-reps: must be >= 1"),
    ("unknown-command", ["grades"], {}, "argument cmd: invalid choice: 'grades'"),
]


def _write(root: Path, files: dict, ctx: dict) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = content(ctx) if callable(content) else content
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_every_command_has_bad_input_cases(capsys):
    """The table covers every ``rbr-fast`` command the parser offers (a new command needs its cases),
    and each case is one test of its own (no two share an id)."""
    with pytest.raises(SystemExit):
        main(["--help"])
    commands = set(re.search(r"\{([a-z,-]+)\}", capsys.readouterr().out).group(1).split(","))
    assert {"grade", "eval", "fit", "serve", "ppo"} <= commands  # the help was read
    assert commands == {c[1][0] for c in CASES if c[0] != "unknown-command"}
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv,files,expected", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input(argv, files, expected, tiny_grader_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RBR_FAST_DEBUG", raising=False)
    inputs, cwd = tmp_path / "in", tmp_path / "cwd"
    inputs.mkdir()
    cwd.mkdir()
    ctx = {"in": str(inputs), "model": tiny_grader_dir}
    _write(inputs, files, ctx)
    before = _tree(inputs)
    monkeypatch.chdir(cwd)
    rc = main([a.format(**ctx) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"rbr-fast {argv[0]}: error: " if argv[0] != "grades" else "rbr-fast: error: "), err
    assert expected.format(**ctx) in err
    assert "Traceback" not in out + err and out == ""
    assert _tree(cwd) == [] and _tree(inputs) == before  # no output folder or file, nothing beside the inputs


def test_resume_without_checkpoint_says_it_starts_fresh(tmp_path, monkeypatch, capsys):
    import rbr_fast.ppo.trainer as trainer
    monkeypatch.setattr(trainer, "train", lambda cfg, resume: {"time_split_s": {}})
    (tmp_path / "p.jsonl").write_text(jl(*PROMPTS))
    assert main(["ppo", "--prompts", str(tmp_path / "p.jsonl"), "--out-dir", str(tmp_path / "run"), "--resume"]) == 0
    err = capsys.readouterr().err
    assert err == f"--resume: no checkpoint in {tmp_path / 'run' / 'checkpoints'}; starting fresh\n"


def test_yaml_float_without_a_dot(tmp_path):
    """YAML 1.1 reads ``1e-5`` as a string; a float field takes the number."""
    from rbr_fast.ppo import PPOConfig
    (tmp_path / "c.yaml").write_text("lr: 1e-5\nrbr: false\nreward_model: x\n")
    cfg = PPOConfig.from_yaml(tmp_path / "c.yaml")
    assert cfg.lr == 1e-5 and cfg.rbr is False


def _raise(e: BaseException):
    def f(*args):
        raise e
    return f


def test_interrupt_and_bugs(monkeypatch, capsys):
    """Ctrl-C: one line, exit 130. A bug is not a user error: its exception reaches the caller, and
    so does a user error under RBR_FAST_DEBUG=1."""
    import rbr_fast.cli.grade as commands
    monkeypatch.delenv("RBR_FAST_DEBUG", raising=False)
    monkeypatch.setattr(commands, "read_jsonl", _raise(KeyboardInterrupt()))
    assert main(["grade", "--data", "x.jsonl"]) == 130
    assert capsys.readouterr().err == "rbr-fast grade: interrupted\n"
    monkeypatch.setattr(commands, "read_jsonl", _raise(IndexError("a bug")))
    with pytest.raises(IndexError, match="a bug"):
        main(["grade", "--data", "x.jsonl"])
    monkeypatch.setattr(commands, "read_jsonl", _raise(UserError("x.jsonl: no rows")))
    monkeypatch.setenv("RBR_FAST_DEBUG", "1")
    with pytest.raises(UserError, match="no rows"):
        main(["grade", "--data", "x.jsonl"])


def test_ppo_help_in_process(capsys):
    with pytest.raises(SystemExit) as e:
        main(["ppo", "--help"])
    assert e.value.code == 0 and "--gradient-checkpointing" in capsys.readouterr().out


def _run(args, cwd, **env):
    base = {k: v for k, v in os.environ.items() if k != "RBR_FAST_DEBUG"}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env={**base, **env},
                          timeout=120)


def test_entry_points_in_subprocesses(tmp_path):
    """``python -m rbr_fast`` and ``python -m rbr_fast.ppo`` as a user runs them."""
    r = _run(["-m", "rbr_fast", "grade", "--data", "missing.jsonl"], tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "rbr-fast grade: error: missing.jsonl: no such data file\n")
    (tmp_path / "c.yaml").write_text("rbr: maybe\n")
    r = _run(["-m", "rbr_fast.ppo", "--config", "c.yaml"], tmp_path)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "python -m rbr_fast.ppo: error: ppo config: rbr='maybe': must be true or false"], r.stderr
    r = _run(["-m", "rbr_fast", "ppo", "--help"], tmp_path)
    assert r.returncode == 0 and "--gradient-checkpointing" in r.stdout and "Traceback" not in r.stderr
    r = _run(["-m", "rbr_fast", "grade", "--data", "missing.jsonl"], tmp_path, RBR_FAST_DEBUG="1")
    assert r.returncode == 1 and "Traceback" in r.stderr and "missing.jsonl: no such data file" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
