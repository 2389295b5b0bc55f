"""One ``rbr-fast serve`` per node and configuration, started by the first trainer worker that asks.

verl's ``remote`` reward manager starts 8 Ray actors per reward-loop worker and each would load its
own grader; with ``server_url="local"`` they all score through one server on this node instead. The
first caller (under a file lock in ``node_graders.folder()``, so concurrent workers start one) picks
a free loopback port and a random token, starts ``python -m rbr_fast serve`` detached from itself
with ``--idle-exit`` (the server ends ``IDLE_EXIT_S`` after the last worker's last request) and waits
for ``/health``; later callers find it recorded, alive and healthy, and use it. The record
(``serve-<config hash>.json``: pid, URL, token) and the server's log (``serve-<hash>.log``) sit in
that per-user folder (mode 0700: the token is only readable by this user).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

from . import node_graders
from .pool import ENV

IDLE_EXIT_S = 600.0
START_TIMEOUT_S = 600.0  # a first run converts the embedded GGUF (~40 s) or downloads a hub model


class Local(NamedTuple):
    url: str
    token: str
    pid: int


_known: dict = {}  # this process's servers by configuration: no lock or health check per call


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def local_server(options: dict, start_timeout_s: float = START_TIMEOUT_S, idle_exit_s: float = IDLE_EXIT_S) -> Local:
    """URL and token of this node's server for the reward ``options`` (``pool.config``'s keys),
    started when none is running; raises ``RuntimeError`` in one line (with the server log's last
    lines) when it does not come up."""
    unknown = sorted(set(options) - set(ENV))
    if unknown:
        raise TypeError(f"unknown rbr_fast reward option(s) {unknown} for the local server; known: {sorted(ENV)}")
    given = {k: v for k, v in sorted(options.items()) if v is not None}
    key = hashlib.sha256(json.dumps(given, sort_keys=True, default=str).encode()).hexdigest()[:12]
    if key in _known and node_graders.alive(_known[key].pid):
        return _known[key]
    _known[key] = _start_or_find(key, given, start_timeout_s, idle_exit_s)
    return _known[key]


def _start_or_find(key: str, given: dict, start_timeout_s: float, idle_exit_s: float) -> Local:
    folder = node_graders.folder()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    record, log_path = folder / f"serve-{key}.json", folder / f"serve-{key}.log"
    with open(folder / f"serve-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter per node; the others wait here, then find it
        try:
            known = json.loads(record.read_text())
            if node_graders.alive(int(known["pid"])) and _healthy(known["url"]):
                return Local(known["url"], known["token"], int(known["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        port, token = _free_port(), secrets.token_hex(16)
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "rbr_fast", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--idle-exit", str(idle_exit_s)]
        for k, v in given.items():  # each reward option is the `rbr-fast serve` flag of the same name
            cmd += ["--" + k.replace("_", "-"), str(v)]
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True,  # outlives the worker that started it
                                    env={**os.environ, "RBR_FAST_TOKEN": token})  # not on the command line
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": proc.pid, "url": url, "token": token, "options": given}))
        os.chmod(tmp, 0o600)
        tmp.replace(record)
        end = time.monotonic() + start_timeout_s
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"the node-local rbr-fast serve exited with status {proc.returncode}: "
                                   f"{_tail(log_path)} (log: {log_path})")
            if time.monotonic() > end:
                proc.terminate()
                raise RuntimeError(f"the node-local rbr-fast serve did not answer /health within {start_timeout_s:.0f} s "
                                   f"(log: {log_path})")
            time.sleep(0.25)
        return Local(url, token, proc.pid)
