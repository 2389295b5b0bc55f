"""User errors: what the command line (``rbr_fast.cli.common.run_command``) reports as one line.

A ``UserError`` is input the user can fix: a file, a row, a config field, an option. The command
line prints it as one line, ``rbr-fast <command>: error: <message>``, and exits with 2; so do a few
OS-level errors about the user's paths (a missing file, a folder where a file is expected, no
permission). Anything else is a bug and keeps its traceback. ``RBR_FAST_DEBUG=1`` shows the
traceback of everything.
"""
from __future__ import annotations

DEBUG_ENV = "RBR_FAST_DEBUG"


class UserError(ValueError):
    """Bad input the user can fix; the message names the file (and line), field or option."""


# raised by open() and friends on paths the user named
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
