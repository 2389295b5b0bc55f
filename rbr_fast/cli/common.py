"""What every command shares: the parser class, option types, how errors are reported, where
outputs go, and the grader options (``--model``, ``--spec``, ...) of the commands that grade."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import DEBUG_ENV, PATH_ERRORS, UserError
from ..grading.grader import Grader, Grades, load_grader, resolve_dtype
from ..io import atomic_write_text, check_model_location
from ..rules import RuleSpec, resolve_spec

# every command writes under this folder of the current one by default (the project's .gitignore has it)
OUTPUT_ROOT = Path("rbr_fast_out")


def default_output(name: str) -> str:
    """``OUTPUT_ROOT/name``: a command's default output file or folder."""
    return str(OUTPUT_ROOT / name)


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror}"
    return re.sub(r"\s*\n\s*", " ", str(e)).strip()


def run_command(prog: str, command: Callable[[], int]) -> int:
    """``command()``'s exit code; a user error becomes one line on stderr and exit code 2, Ctrl-C one
    line and 130. Other exceptions propagate (with their traceback), all of them under ``RBR_FAST_DEBUG=1``."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return command()
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (UserError, *PATH_ERRORS) as e:
        print(f"{prog}: error: {_message(e)}", file=sys.stderr)
        return 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors raise ``UserError`` (one line through ``run_command``) instead of
    printing the usage and exiting; subcommand parsers are of the same class."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def number(kind: type = int, low: Optional[float] = None, high: Optional[float] = None, *,
           open_low: bool = False, open_high: bool = False) -> Callable[[str], float]:
    """An argparse ``type=``: a finite ``kind`` (int or float) between ``low`` and ``high``
    (included unless ``open_low`` / ``open_high``)."""
    lo = "" if low is None else f"{'(' if open_low else '['}{low}"
    hi = "" if high is None else f"{high}{')' if open_high else ']'}"
    want = (f"in {lo}, {hi}" if lo and hi else f"{'>' if open_low else '>='} {low}" if lo
            else f"{'<' if open_high else '<='} {high}")

    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {s!r}") from None
        if not math.isfinite(v) or (low is not None and (v <= low if open_low else v < low)) or \
                (high is not None and (v >= high if open_high else v > high)):
            raise argparse.ArgumentTypeError(f"must be {want}, got {s}")
        return v
    return parse

def _dtype(name: str) -> str:
    try:
        resolve_dtype(name, torch.device("cpu"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="transformers model folder or hub id, or a served grader's OpenAI-compatible URL "
                                   "(http://HOST:PORT/v1, options after '#': #model=NAME&tokenizer=PATH&concurrency=N) "
                                   "(default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--grader-url", help="a served grader (URL as for --model) that answers the propositions without "
                                        "a trained head, and those the spec routes to it (answered_by: served)")
    p.add_argument("--gguf-file", help="GGUF file name inside --model")
    p.add_argument("--spec", help="rule spec YAML (default: the shipped safety spec)")
    p.add_argument("--dtype", type=_dtype, default="auto",
                   help="auto (bf16 on CUDA/AMX, else fp32), float32, bfloat16, float16")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--token-budget", type=number(int, 1),
                   help="most tokens in one forward pass (default 8192, or what --memory-gib allows)")
    p.add_argument("--memory-gib", type=number(float, 0, open_low=True),
                   help="cap on the grader's memory (weights + one pass): passes are sized to fit")
    p.add_argument("--max-length", type=number(int, 1),
                   help="longest prompt; longer conversations are cut from the left")
    p.add_argument("--few-shot", action="store_true", help="show each proposition's examples before its question")
    p.add_argument("--heads", help="trained proposition heads (safetensors from `rbr-fast train-grader`) for --model "
                                   "(default: the shipped heads with the embedded model and the default spec)")
    p.add_argument("--zero-shot", action="store_true", help="ask every question; no trained heads")
    p.add_argument("--ask-rare", action="store_true",
                   help="ask the propositions with too few labels for a head instead of answering their prior")


def add_rows_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=number(int, 1), help="grade only the first N rows")
    p.add_argument("--propositions", help="comma-separated subset of the spec's propositions")


def check_model_args(a: argparse.Namespace) -> RuleSpec:
    """The rule spec of ``add_model_args`` options, checked with ``--model`` before any model loads."""
    if a.model:
        check_model_location(a.model, "--model")
    if a.heads and a.zero_shot:
        raise UserError("--heads and --zero-shot exclude each other")
    if a.heads and not Path(a.heads).is_file():
        raise UserError(f"--heads {a.heads}: no such file")
    return resolve_spec(a.spec)


def grader_from_args(a: argparse.Namespace, spec: Optional[RuleSpec] = None) -> Grader:
    """The grader of ``add_model_args`` options (``spec``: the one ``check_model_args`` returned)."""
    spec = spec or resolve_spec(a.spec)
    kw = dict(token_budget=a.token_budget, memory_gib=a.memory_gib, max_length=a.max_length, few_shot=a.few_shot,
              priors=not a.ask_rare)
    if a.heads:
        kw["heads"] = a.heads
    if not a.model:
        kw["trained"] = not a.zero_shot
    return load_grader(spec, a.model, gguf_file=a.gguf_file, dtype=a.dtype, device=a.device,
                       grader_url=a.grader_url, **kw)


def propositions_arg(a: argparse.Namespace, spec: RuleSpec) -> Optional[list[str]]:
    if not a.propositions:
        return None
    names = [n.strip() for n in a.propositions.split(",")]
    unknown = [n for n in names if n not in spec.propositions]
    if unknown:
        raise UserError(f"--propositions: unknown {', '.join(map(repr, unknown))}; the spec ({spec.source}) has "
                        f"{', '.join(spec.proposition_names)}")
    if len(set(names)) != len(names):
        raise UserError(f"--propositions {a.propositions}: a name is repeated")
    return names


def write_grades(path: Path, grades: Grades) -> None:
    """One line per input row, written atomically (never half a file)."""
    atomic_write_text(path, "".join(
        json.dumps({"index": i, "p_yes": dict(zip(grades.propositions, grades.p_yes[i].tolist())),
                    "mass": dict(zip(grades.propositions, grades.mass[i].tolist()))}) + "\n"
        for i in range(grades.p_yes.shape[0])))


def feature_cache_dir(cache_dir: Optional[str]) -> Path:
    """``--cache-dir``, else ``$RBR_FAST_CACHE/features``."""
    from ..grading.embedded import cache_root
    return Path(cache_dir) if cache_dir else cache_root() / "features"
