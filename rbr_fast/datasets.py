"""Readers for the data the package works on: jsonl of (conversation, completion) rows, and the
RBR gold set (``../shared/data/rbr_gold/train.jsonl``: conversations, completions, response types and
23 human-labelled propositions)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

# Where the shared data sits beside a checkout of the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GOLD = SHARED_DATA / "rbr_gold" / "train.jsonl"

_PROMPT_KEYS = ("prompt", "conversation", "messages", "query")
_COMPLETION_KEYS = ("completion", "response")


@dataclass
class Example:
    conversation: Any  # list of {"role", "content"} messages, or a plain prompt string
    completion: Any  # string or assistant messages
    response_type: Optional[str] = None
    labels: dict[str, bool] = field(default_factory=dict)  # human labels of propositions, when known
    row: dict = field(default_factory=dict, repr=False)  # the raw record


def _pick(row: dict, keys: tuple[str, ...], where: str) -> Any:
    for k in keys:
        if k in row:
            return row[k]
    raise ValueError(f"{where}: no {' / '.join(repr(k) for k in keys)} key (keys: {sorted(row)})")


def iter_rows(path: Union[str, Path]) -> Iterator[tuple[str, dict]]:
    """(``file:line``, object) for every non-blank line of a jsonl file; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object per line")
            yield where, row


def read_jsonl(path: Union[str, Path], limit: Optional[int] = None) -> list[Example]:
    """Rows with a conversation (``prompt``/``conversation``/``messages``/``query``) and a
    ``completion``/``response``; ``response_type`` and ``propositions`` (name -> bool) are kept when present."""
    out = []
    for where, row in iter_rows(path):
        if limit is not None and len(out) >= limit:
            break
        labels = row.get("propositions") or {}
        if not isinstance(labels, dict) or any(v not in (True, False) for v in labels.values()):
            raise ValueError(f"{where}: 'propositions' must map names to booleans (true/false or 1/0)")
        out.append(Example(_pick(row, _PROMPT_KEYS, where), _pick(row, _COMPLETION_KEYS, where),
                           row.get("response_type"), {k: bool(v) for k, v in labels.items()}, row))
    return out
