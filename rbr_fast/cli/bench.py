"""``rbr-fast bench`` (also ``python -m rbr_fast.bench``): ``[--ops gae,...] [--sizes 256x2048,...] [--quick]
[--no-tune-malloc] [--out DIR]``; the benchmark itself is ``rbr_fast.bench``."""
from __future__ import annotations

from pathlib import Path

import torch

from ..bench import CASES, Options, run
from ..bench.harness import parse_size
from .common import OUTPUT_ROOT, ArgumentParser, number

PROG = "python -m rbr_fast.bench"


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--ops", help="comma-separated op or case names (default: all): " + ", ".join(CASES))
    p.add_argument("--sizes", help="comma-separated BxT sizes for every selected case, e.g. 256x2048,64x512")
    p.add_argument("--quick", action="store_true", help="small sizes, short timing, no torch.compile: a smoke run")
    p.add_argument("--out", type=Path, default=OUTPUT_ROOT,
                   help="results go to OUT/bench_results/ (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile-budget", type=number(float, 0), default=None, metavar="S",
                   help="abandon a torch.compile peer after S seconds (default 120; 0 in --quick)")
    p.add_argument("--target-time", type=number(float, 0), default=None, metavar="S",
                   help="timed seconds per implementation and size (default 0.5; 0.05 in --quick)")
    p.add_argument("--min-reps", type=number(int, 1), default=5, help="timed calls per implementation at least (default 5)")
    p.add_argument("--no-tune-malloc", action="store_true",
                   help="time CPU ops as a plain caller sees them: glibc returns freed multi-MiB blocks, so every "
                        "fresh output is page-faulted in again (default: rbr_fast.tune_malloc() for every implementation)")
    p.add_argument("--dram-mib", type=number(int, 1), default=512, help="buffer size of the DRAM copy-bandwidth probe")
    a = p.parse_args(argv)

    wanted = a.ops.split(",") if a.ops else None
    cases = [c for c in CASES.values() if wanted is None or c.name in wanted or c.op in wanted]
    unknown = set(wanted or ()) - {c.name for c in CASES.values()} - {c.op for c in CASES.values()}
    if unknown or not cases:
        p.error(f"unknown --ops {sorted(unknown)}; choose from {', '.join(CASES)}")
    try:
        sizes = [parse_size(s) for s in a.sizes.split(",")] if a.sizes else None
    except ValueError:
        p.error(f"--sizes {a.sizes!r}: expected BxT sizes such as 256x2048,64x512")
    opts = Options(device=torch.device(a.device), quick=a.quick, out=a.out, dram_mib=a.dram_mib, min_reps=a.min_reps,
                   tune_malloc=not a.no_tune_malloc,
                   target_s=a.target_time if a.target_time is not None else (0.05 if a.quick else 0.5),
                   compile_budget_s=a.compile_budget if a.compile_budget is not None else (0.0 if a.quick else 120.0))
    return run(cases, sizes, opts)

