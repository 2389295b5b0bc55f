"""llama-cpp-python's OpenAI-compatible server (``pip install "llama-cpp-python[server]"``, built
by ``make test``) serving the embedded SmolLM2 GGUF on 127.0.0.1, in a child process: the real
server the served-grader tests and ``benchmarks/served_grader.py`` grade against."""
import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``LlamaServer(gguf)``: ``.url`` (the ``/v1`` root), ``.stop()``, ``.start()`` (again, same port)."""

    def __init__(self, gguf: str, n_ctx: int = 4096, threads: int = 0, port: int = 0):
        self.gguf, self.n_ctx, self.port = str(gguf), n_ctx, port or free_port()
        self.threads = threads or os.cpu_count() or 1
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = None
        self.start()

    def start(self, timeout_s: float = 180.0) -> None:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", self.gguf, "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
               "--n_threads_batch", str(self.threads), "--verbose", "false"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}: "
                                   f"{self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer on {self.url} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
