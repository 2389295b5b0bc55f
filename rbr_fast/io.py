"""Small file helpers: atomic text writes, JSON without NaN, optional matplotlib, UTF-8 reads that
name the line of a bad byte, and checks of the paths a user gives before anything is written."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

from .errors import UserError


def atomic_write(path: Union[str, Path], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it over ``path``:
    readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    """``atomic_write`` of a text file."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
    return atomic_write(path, write)


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or None when matplotlib is not installed
    (plots are optional everywhere)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _no_nan(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def dumps(obj: Any, **kw) -> str:
    """JSON with NaN/inf written as null (valid JSON for any reader)."""
    return json.dumps(_no_nan(obj), allow_nan=False, **kw)


def decode_utf8(data: bytes, source: Union[str, Path], line: int = 1) -> str:
    """``data`` (from ``source``, starting at ``line``) as UTF-8 text, a leading BOM dropped; bytes
    that are not UTF-8 raise ``UserError`` naming the file and line."""
    try:
        return data.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        at = line + data.count(b"\n", 0, e.start)
        raise UserError(f"{source}:{at}: not UTF-8 text (byte {data[e.start]:#04x}); "
                        "save the file as UTF-8") from None


def read_text(path: Union[str, Path]) -> str:
    """A UTF-8 text file (see ``decode_utf8``); line ends are left as they are."""
    return decode_utf8(Path(path).read_bytes(), path)


def yaml_error(e: Exception, source: Union[str, Path]) -> str:
    """``file:line: not valid YAML: problem`` of a PyYAML error."""
    mark = getattr(e, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark else str(source)
    return f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}"


def check_model_location(name: str, what: str) -> None:
    """A model named by a local path must be an existing folder: transformers would take a missing
    one for a hub id and answer with a repo-id error. ``org/name`` that is not on disk is left to
    the hub."""
    if name.startswith(("http://", "https://")):
        return  # a served grader (``grading.served``): checked when it connects
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{what} {name}: a file, not a model folder")
        return
    looks_local = (path.is_absolute() or name.startswith((".", "~")) or name.endswith(("/", os.sep))
                   or name.replace(os.sep, "/").count("/") > 1)
    if looks_local:
        raise UserError(f"{what} {name}: no such model folder")


def check_output_file(path: Union[str, Path], what: str) -> None:
    """An output file must not be a folder (checked before any work that would be lost)."""
    if Path(path).is_dir():
        raise UserError(f"{what} {path}: is a folder; give a file name")


def check_output_dir(path: Union[str, Path], what: str) -> None:
    """An output folder may exist, but not as a file."""
    if Path(path).exists() and not Path(path).is_dir():
        raise UserError(f"{what} {path}: is a file; give a folder")
