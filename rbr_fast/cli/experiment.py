"""``rbr-fast experiment``: the RBR-PPO comparison (``rbr_fast.ppo.experiment``): PPO arms that differ
only in the reward, from one cached SFT start, judged on held-out prompts before and after."""
from __future__ import annotations

import argparse
import dataclasses

from .common import default_output, number


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of integers") from None


def _field(text: str) -> tuple[str, object]:
    """``FIELD=VALUE``, the value read as in a PPO YAML config (the config checks it later)."""
    from rbr_fast.ppo.config import PPOConfig
    import yaml
    name, eq, value = text.partition("=")
    if not eq or name not in PPOConfig.__dataclass_fields__:
        raise argparse.ArgumentTypeError(f"{text!r}: FIELD=VALUE with a PPO config field (`rbr-fast ppo --help`)")
    try:
        return name, PPOConfig.yaml_values({name: yaml.safe_load(value)})[name]
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not YAML") from None


def run(args: argparse.Namespace) -> int:
    import rbr_fast
    from rbr_fast.ppo.experiment import ExperimentConfig, run as run_experiment, table
    rbr_fast.tune_malloc()
    base = ExperimentConfig(out=args.out)
    ppo = {**base.ppo, **dict(args.set or [])}
    cfg = ExperimentConfig(out=args.out, arms=[a for a in args.arms.split(",") if a], seeds=args.seeds,
                           steps=args.steps, eval_every=args.eval_every or args.steps, ppo=ppo,
                           sft=dataclasses.replace(base.sft, refuse_share=args.refuse_share),
                           written_eval=not args.no_written, progress=not args.no_progress)
    results = run_experiment(cfg)
    print(f"{args.out.rstrip('/')}/results.md:\n{table(results)}")
    t = results["time_split_s"]
    print(f"wall {results['wall_s'] / 60:.1f} min; " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()))
    return 0


def register(sub) -> None:
    from rbr_fast.ppo.experiment import ARMS, ExperimentConfig
    base = ExperimentConfig(out="")
    e = sub.add_parser("experiment", help="RBR-PPO against its ablations on held-out safety (resumable)",
                       description=__doc__)
    e.add_argument("--out", default=default_output("experiment"), help="results and runs (default: %(default)s); "
                   "run again with the same --out to resume")
    e.add_argument("--arms", default=",".join(base.arms), help=f"comma-separated, of {', '.join(ARMS)}")
    e.add_argument("--seeds", type=_ints, default=list(base.seeds), help="comma-separated seeds (default: 0,1)")
    e.add_argument("--steps", type=number(int, 1), default=base.steps, help="PPO steps per run")
    e.add_argument("--eval-every", type=number(int, 1), default=base.eval_every,
                   help="evaluate (and checkpoint) every N steps")
    e.add_argument("--refuse-share", type=float, default=base.sft.refuse_share,
                   help="share of the unsafe SFT prompts trained to refuse (the start's safety)")
    e.add_argument("--set", action="append", type=_field, metavar="FIELD=VALUE",
                   help="a PPO config field for every arm (repeatable), e.g. --set lr=5e-6; shared defaults: "
                        + ", ".join(f"{k}={v}" for k, v in base.ppo.items()))
    e.add_argument("--no-written", action="store_true", help="evaluate on XSTest's eval split only")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=run)
