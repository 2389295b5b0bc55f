"""``python -m rbr_fast.ppo`` (also ``rbr-fast ppo``; under ``torchrun`` for several processes)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ArgumentParser, run_command
from .config import add_arguments, from_args

PROG = "python -m rbr_fast.ppo"


def parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or ArgumentParser(prog=PROG, description=__doc__)
    add_arguments(p)
    return p


def run(a: argparse.Namespace) -> int:
    from . import checkpoint
    from .trainer import train
    cfg = from_args(a)
    root = Path(cfg.out_dir) / "checkpoints"
    # checked before any model loads (torchrun sets RANK)
    if a.resume and checkpoint.resumable(root, cfg.to_dict(), int(os.environ.get("RANK", "0"))) is None:
        print(f"--resume: no checkpoint in {root}; starting fresh", file=sys.stderr)
    summary = train(cfg, resume=a.resume)
    if "before" in summary and "after" in summary:
        b, f = summary["before"], summary["after"]
        print("held-out " + ", ".join(f"{k} {b[k]:.3f} -> {f[k]:.3f}" for k in b if k != "prompts" and k in f))
    t = summary["time_split_s"]
    total = sum(t.values()) or 1.0
    print("time: " + ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)" for k, v in t.items()))
    print(f"wrote {cfg.out_dir}/metrics.jsonl, summary.json, curves.png, checkpoints/")
    return 0


def main(argv=None) -> int:
    return run_command(PROG, lambda: run(parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
