"""Rows a user gives ``rbr-fast fit`` / ``synth`` / ``relabel``: jsonl records with required fields and
a response type of the rule spec, and the rank of each completion among its prompt's."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..rules import RuleSpec
from .readers import iter_rows


def read_rows(path: Path, fields: tuple[str, ...], spec: RuleSpec) -> tuple[list[str], list[dict]]:
    """(``file:line`` per row, rows) of a jsonl file, each row with ``fields`` and, when it has one, a
    ``response_type`` of ``spec``; an empty file is an error naming it, a bad row one naming its line."""
    wheres, rows = [], []
    for where, r in iter_rows(path):
        missing = [k for k in fields if k not in r]
        if missing:
            raise UserError(f"{where}: needs {', '.join(fields)} (missing {', '.join(missing)})")
        if "response_type" in r:
            try:
                spec.response_type(r["response_type"])
            except (KeyError, TypeError) as e:
                raise UserError(f"{where}: {e.args[0]}") from None
        wheres.append(where)
        rows.append(r)
    if not rows:
        raise UserError(f"{path}: no rows")
    return wheres, rows


def ranks(wheres: list[str], rows: list[dict], spec: RuleSpec) -> list[int]:
    """Rank (0 = best) of each comparison row, from ``rank`` or ``class``."""
    ranks = []
    for where, r in zip(wheres, rows):
        classes = [c.name for c in spec.response_type(r["response_type"]).classes]
        if "rank" in r:
            if isinstance(r["rank"], bool) or not isinstance(r["rank"], int) or r["rank"] < 0:
                raise UserError(f"{where}: rank {r['rank']!r} must be an integer >= 0 (0 = best)")
            ranks.append(r["rank"])
        elif r.get("class") in classes:
            ranks.append(classes.index(r["class"]))
        else:
            raise UserError(f"{where}: needs a rank or a class of {r['response_type']!r} ({', '.join(classes)}), "
                            f"got class {r.get('class')!r}")
    return ranks
