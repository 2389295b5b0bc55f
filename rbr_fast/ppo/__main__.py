"""``python -m rbr_fast.ppo`` (also ``rbr-fast ppo``; under ``torchrun`` for several processes)."""
from __future__ import annotations

import argparse
import sys

from .config import add_arguments, from_args


def parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="python -m rbr_fast.ppo", description=__doc__)
    add_arguments(p)
    return p


def run(a: argparse.Namespace) -> int:
    from .trainer import train
    try:
        cfg = from_args(a)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
