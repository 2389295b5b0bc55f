"""``rbr-fast ppo`` (also ``python -m rbr_fast.ppo``; under ``torchrun`` for several processes).

The options are ``PPOConfig``'s fields, built by transformers' ``HfArgumentParser`` from the
dataclass and its help texts (``--field VALUE``, also ``--field-name``; booleans also ``--no_field``);
``--config FILE`` reads a YAML file of fields first, and the options given override it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from transformers import HfArgumentParser

from ..errors import UserError
from ..ppo.config import PPOConfig
from .common import run_command

PROG = "python -m rbr_fast.ppo"


class ConfigParser(HfArgumentParser):
    """``HfArgumentParser`` whose errors are one line (``UserError``) instead of the usage and an exit."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def parser(prog: str = PROG) -> ConfigParser:
    p = ConfigParser(PPOConfig, prog=prog, description=__doc__,
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="YAML file of config fields (command-line options override it)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    return p


def parse(argv: list[str], prog: str = PROG) -> tuple[PPOConfig, bool]:
    """(config, resume) of the command line: the YAML file's fields, then the options given on the
    command line; the config validates itself (``UserError`` naming the field and the file)."""
    options = parser(prog).parse_args(argv)  # --help, unknown options, values of the wrong type
    # again without defaults, to tell the options given from the defaults; YAML values do not go through
    # argparse, whose types would convert strings before the config can name the field and the file
    given = parser(prog)
    fields = {f.name for f in dataclasses.fields(PPOConfig)}
    for action in given._actions:  # (set_defaults would store SUPPRESS as a string to convert)
        if action.dest in fields:
            action.default = argparse.SUPPRESS
    explicit = {k: v for k, v in vars(given.parse_args(argv)).items() if k not in ("config", "resume")}
    cfg = PPOConfig.from_yaml(options.config, **explicit) if options.config else PPOConfig(**explicit)
    return cfg, options.resume


def run(argv: list[str], prog: str = PROG) -> int:
    from ..ppo import checkpoint
    from ..ppo.trainer import train
    cfg, resume = parse(argv, prog)
    root = Path(cfg.out_dir) / "checkpoints"
    # checked before any model loads (torchrun sets RANK)
    if resume and checkpoint.resumable(root, cfg.to_dict(), int(os.environ.get("RANK", "0"))) is None:
        print(f"--resume: no checkpoint in {root}; starting fresh", file=sys.stderr)
    summary = train(cfg, resume=resume)
    if "before" in summary and "after" in summary:
        b, f = summary["before"], summary["after"]
        print("held-out " + ", ".join(f"{k} {b[k]:.3f} -> {f[k]:.3f}" for k in b if k != "prompts" and k in f))
    t = summary["time_split_s"]
    total = sum(t.values()) or 1.0
    print("time: " + ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)" for k, v in t.items()))
    print(f"wrote {cfg.out_dir}/metrics.jsonl, summary.json, curves.png, checkpoints/")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m rbr_fast.ppo``: one error line and exit status 2 for bad options or config."""
    return run_command(PROG, lambda: run(sys.argv[1:] if argv is None else list(argv)))
