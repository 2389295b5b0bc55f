"""User errors and how the command line reports them.

A ``UserError`` is input the user can fix: a file, a row, a config field, an option. The command
line prints it as one line, ``rbr-fast <command>: error: <message>``, and exits with 2; so do a few
OS-level errors about the user's paths (a missing file, a folder where a file is expected, no
permission). Anything else is a bug and keeps its traceback. ``RBR_FAST_DEBUG=1`` shows the
traceback of everything.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from typing import Callable, Optional

DEBUG_ENV = "RBR_FAST_DEBUG"


class UserError(ValueError):
    """Bad input the user can fix; the message names the file (and line), field or option."""


# raised by open() and friends on paths the user named
_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


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
    except (UserError, *_PATH_ERRORS) as e:
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
