"""``rbr-fast compile-check [--arch sm_80,sm_90]``: compile every Triton kernel the ops launch, at real
model shapes, for NVIDIA GPUs without one (``rbr_fast.ops.compile_check``); one line per kernel and
architecture. Exit status 1 on a compile error or a register spill."""
from __future__ import annotations

import argparse
import os
import re
import sys

from ..errors import UserError


def _archs(text: str) -> tuple[int, ...]:
    archs = tuple(int(m) for m in re.findall(r"(?:sm_)?(\d+)", text))
    if not archs or len(archs) != len(text.split(",")):
        raise argparse.ArgumentTypeError(f"expected e.g. sm_80,sm_90, got {text!r}")
    return archs


def run(a: argparse.Namespace) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise UserError("TRITON_INTERPRET is set: the kernels are interpreted and cannot be compiled; unset it")
    try:
        from ..ops import compile_check
    except ImportError as e:
        raise UserError(f"triton is not importable ({e}); install it with `pip install triton`") from None
    results = compile_check.check(a.arch, progress=lambda s: print(f"compiling {s}", file=sys.stderr, flush=True))
    print(compile_check.table(results))
    bad = [r for r in results if r.error or r.spill_bytes]
    print(f"{len(results) - len(bad)} of {len(results)} compiled without spills" +
          (f"; {len(bad)} failed or spilled" if bad else ""))
    return 1 if bad else 0


def register(sub) -> None:
    c = sub.add_parser("compile-check", help="compile every Triton kernel for NVIDIA GPUs, no GPU needed")
    c.add_argument("--arch", type=_archs, default=(80, 90), help="comma-separated targets (default: sm_80,sm_90)")
    c.set_defaults(func=run)
