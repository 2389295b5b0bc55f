"""Which processes of this node hold a loaded grader: a second one is worth one warning line.

verl starts ``reward.num_workers`` reward processes (its ``remote`` manager 8 Ray actors in each),
OpenRLHF calls the reward in every vLLM engine actor: each loads its own grader unless told to share
one, multiplying memory and load time without any error. Every in-process grader load
(``LazyReward.reward``, which ``rbr-fast serve`` uses too) writes one small file to a per-user folder
of this node (``$RBR_FAST_NODE_DIR``, default ``<tmp>/rbr_fast-graders-<uid>``) and removes it at exit;
files of processes that are gone are removed by the next load. When other live processes already
hold one, the load logs a WARNING naming them and how to share a single grader.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger("rbr_fast.node")
SHARE = ("share one: one server per node, started for you (verl reward_kwargs.server_url=local, TRL "
         "RBRServerReward('local', ...), OpenRLHF RBR_FAST_LOCAL_SERVER=1), or run `rbr-fast serve` on this node and "
         "score through it (verl server_url=URL, OpenRLHF --reward.remote_url URL/get_reward, TRL RBRServerReward(URL))")


def folder() -> Path:
    return Path(os.environ.get("RBR_FAST_NODE_DIR") or Path(tempfile.gettempdir()) / f"rbr_fast-graders-{os.getuid()}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that pid: alive
        return True
    return True


def others() -> list[dict]:
    """The graders other live processes of this node hold (files of dead processes are removed)."""
    out = []
    for f in sorted(folder().glob("grader-*.json")):
        try:
            entry = json.loads(f.read_text())
            pid = int(entry["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
        if pid == os.getpid():
            continue
        if alive(pid):
            out.append(entry)
        else:
            f.unlink(missing_ok=True)
    return out


def register(model: Optional[str], device: Optional[str]) -> list[dict]:
    """Record this process's grader (removed at exit); returns the other live processes' entries and
    logs one WARNING when there are any."""
    d = folder()
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = d / f"grader-{os.getpid()}-{time.monotonic_ns()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "model": model or "embedded", "device": device or "auto"}))
        tmp.replace(path)
    except OSError:  # a read-only or full tmp: the warning is a courtesy, never a failure
        return []
    atexit.register(path.unlink, missing_ok=True)
    live = others()
    if live:
        shown = ", ".join(f"pid {e['pid']} ({e['model']}, {e['device']})" for e in live[:4])
        log.warning("rbr_fast: %d other process(es) on this node already hold a grader: %s%s; each loads its own "
                    "copy; %s", len(live), shown, ", ..." if len(live) > 4 else "", SHARE)
    return live
