"""Readers for the data the package works on: jsonl of (conversation, completion) rows, such as the
RBR gold set shipped in ``rbr_fast.data`` (conversations, completions, response types and 23
human-labelled propositions)."""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from . import files
from ..errors import UserError
from ..io import decode_utf8, read_text

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
    raise UserError(f"{where}: no {' / '.join(repr(k) for k in keys)} key (keys: {sorted(row)})")


def iter_rows(path: Union[str, Path]) -> Iterator[tuple[str, dict]]:
    """(``file:line``, object) for every non-blank line of a jsonl file; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'a folder, not a data file' if path.is_dir() else 'no such data file'}")
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            line = decode_utf8(raw, path, n)
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
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
            raise UserError(f"{where}: 'propositions' must map names to booleans (true/false or 1/0)")
        out.append(Example(_pick(row, _PROMPT_KEYS, where), _pick(row, _COMPLETION_KEYS, where),
                           row.get("response_type"), {k: bool(v) for k, v in labels.items()}, row))
    return out


# ------------------------------------------------------------------------------------------ XSTest
# Röttger et al. 2024 (CC-BY-4.0): 450 prompts, safe or unsafe, each answered by three models whose
# completions carry a human label.
MODELS = ("gpt4", "llama2orig", "mistralinstruct")
COMPLY, REFUSE, PARTIAL = "1_full_compliance", "2_full_refusal", "3_partial_refusal"
# best first, per prompt label
ORDER = {"safe": (COMPLY, PARTIAL, REFUSE), "unsafe": (REFUSE, PARTIAL, COMPLY)}
RESPONSE_TYPE = {"safe": "comply", "unsafe": "hard_refuse"}


@dataclass
class XSTestItem:
    """One XSTest completion with its prompt's label and the human judgement of the completion."""
    prompt_id: str
    prompt: str
    label: str  # safe | unsafe
    model: str
    completion: str
    human: str  # final_label

    @property
    def key(self) -> str:
        return f"{self.prompt_id}/{self.model}"

    @property
    def rank(self) -> int:
        return ORDER[self.label].index(self.human)

    @property
    def refused(self) -> bool:
        return self.human != COMPLY


def xstest_prompts(folder: Optional[Path] = None) -> dict[str, dict]:
    """``{id: row}`` of ``xstest_prompts.csv`` (columns id, prompt, type, label, focus, note); the
    folder defaults to the shipped copy (``rbr_fast.files.xstest()``)."""
    folder = Path(folder) if folder is not None else files.xstest()
    if not (folder / "xstest_prompts.csv").is_file():
        raise UserError(f"{folder}: no xstest_prompts.csv (an XSTest folder has xstest_prompts.csv and "
                        f"completions_<model>.csv)")
    return {r["id"]: r for r in _read_csv(folder / "xstest_prompts.csv", ("id", "prompt", "label"))}


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a UTF-8 CSV file that has (at least) ``columns``."""
    reader = csv.DictReader(StringIO(read_text(path), newline=""))
    missing = [c for c in columns if c not in (reader.fieldnames or ())]
    if missing:
        raise UserError(f"{path}: no column(s) {', '.join(missing)} "
                        f"(it has {', '.join(reader.fieldnames or ()) or 'none'})")
    return list(reader)


def load_xstest(folder: Optional[Path] = None, prompts: Optional[int] = None, seed: int = 0) -> list[XSTestItem]:
    """Every (prompt, model) completion; ``prompts`` keeps a seeded sample of that many prompt ids
    (safe/unsafe in the data's proportion). The folder defaults to the shipped copy."""
    folder = Path(folder) if folder is not None else files.xstest()
    meta = xstest_prompts(folder)
    ids = sorted(meta)
    if prompts is not None:
        if not 1 <= prompts <= len(ids):
            raise UserError(f"{folder}: a sample of {prompts} prompts asked for; it has {len(ids)}")
        rng = random.Random(seed)
        safe = [i for i in ids if meta[i]["label"] == "safe"]
        unsafe = [i for i in ids if meta[i]["label"] != "safe"]
        n_safe = round(prompts * len(safe) / len(ids))
        ids = sorted(rng.sample(safe, n_safe) + rng.sample(unsafe, prompts - n_safe))
    keep = set(ids)
    items = []
    for model in MODELS:
        for r in _read_csv(folder / f"completions_{model}.csv", ("id", "completion", "final_label")):
            pid = r["id"].removeprefix("v2-")  # completion files prefix the prompt ids with "v2-"
            if pid in keep:
                items.append(XSTestItem(pid, meta[pid]["prompt"], meta[pid]["label"], model,
                                        r["completion"], r["final_label"].strip()))
    bad = {it.human for it in items} - {COMPLY, REFUSE, PARTIAL}
    if bad:
        raise UserError(f"{folder}: unknown final_label value(s) {sorted(bad)}")
    return items
