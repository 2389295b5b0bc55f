"""A grader model served behind an OpenAI-compatible ``/v1/completions`` endpoint (vLLM, SGLang,
llama.cpp's server, llama-cpp-python's server, a hosted API).

Each question is one completion request with ``max_tokens=1`` and the top log-probs of the next
token; P(yes) and P(no) are the sums over the yes/no spellings (``prompts.answer_ids``) found among
them, so the answer is read exactly as the in-process question path reads it, up to the top-k cut.
Prompts are sent as text: the same head + transcript + question ids the in-process path feeds the
model, decoded (every such server accepts text; not all accept token ids).

Prefix caching: the instructions and the transcript come first and each completion's questions are
sent one after the other, so a server that keeps the previous prompt's KV (llama.cpp) or a global
prefix cache (vLLM, SGLang) computes a transcript once per completion. ``concurrency`` completions
are graded at once; a server that runs one request at a time with a single cache
(llama-cpp-python's) wants ``concurrency=1``, since interleaved transcripts evict each other.
"""
from __future__ import annotations

import math
import os
import random
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence
from urllib.parse import urlsplit

from ..errors import UserError

# answers a retry can fix: rate limits and an overloaded or restarting server
_RETRY_STATUS = {408, 429, 502, 503, 504}
API_KEY_ENVS = ("RBR_FAST_API_KEY", "OPENAI_API_KEY")


class ServedGraderError(UserError, RuntimeError):
    """The served grader could not answer (unreachable, wrong model, no log-probs, died mid-run):
    the message is one line naming the URL. A trainer's batch fails with it, never scores on a guess."""


def normalise_url(base_url: str) -> str:
    """``http(s)://host[:port][/path]`` without a trailing slash; a bare host gets ``/v1``."""
    if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
        raise ServedGraderError(f"a served grader needs an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
    url = base_url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def top_logprobs(choice: dict) -> Optional[dict]:
    """``{token text: log-prob}`` of the first generated token from a completion choice, in either
    shape servers use (OpenAI's legacy ``top_logprobs`` list of dicts, or a ``content`` list of
    ``{token, logprob, top_logprobs: [{token, logprob}]}``); None when the choice has none."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    top = lp.get("top_logprobs")
    if isinstance(top, list) and top and isinstance(top[0], dict):
        return {str(k): float(v) for k, v in top[0].items()}
    content = lp.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        entries = content[0].get("top_logprobs") or []
        return {str(e["token"]): float(e["logprob"]) for e in entries if "token" in e and "logprob" in e}
    return None


class ServedClient:
    """Answers yes/no prompts with a model behind an OpenAI-compatible completions endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is added to a bare host).
        model: the served model's name; default: the only one ``GET /models`` lists.
        api_key: sent as a bearer token; default ``$RBR_FAST_API_KEY``, else ``$OPENAI_API_KEY``.
        yes, no: the token texts that spell each answer (from the grader's tokenizer).
        top_k: how many top log-probs to ask for (vLLM allows 20 by default, OpenAI 5).
        concurrency: completions graded at once (each one's questions go in order; see the module).
        timeout_s: per request; retries: further tries of a request after a connection error, a
            timeout or a 408/429/5xx answer, with exponential backoff (``Retry-After`` honoured);
        deadline_s: most seconds one ``ask`` may take in all.
        extra_body: more fields for every request (``{"cache_prompt": True}`` for llama.cpp's server).
    """

    def __init__(self, base_url: str, model: Optional[str] = None, api_key: Optional[str] = None, *,
                 yes: Sequence[str] = (), no: Sequence[str] = (), top_k: int = 20, concurrency: int = 4,
                 timeout_s: float = 60.0, retries: int = 4, deadline_s: float = 3600.0,
                 extra_body: Optional[dict] = None):
        for name, v in (("top_k", top_k), ("concurrency", concurrency)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        for name, v in (("timeout_s", timeout_s), ("deadline_s", deadline_s)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        self.url = normalise_url(base_url)
        self.api_key = api_key or next((os.environ[e] for e in API_KEY_ENVS if os.environ.get(e)), None)
        self.yes, self.no = frozenset(yes), frozenset(no)
        self.top_k, self.concurrency, self.retries = top_k, concurrency, retries
        self.timeout_s, self.deadline_s = float(timeout_s), float(deadline_s)
        self.extra_body = dict(extra_body or {})
        self.missing = 0  # answers so far whose top-k held neither a yes nor a no spelling
        self.asked = 0
        self._http = None
        self._lock = threading.Lock()
        self.models = self._list_models()
        self.model = self._pick(model)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_http"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ transport
    def _client(self):
        with self._lock:
            if self._http is None:
                import httpx
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                self._http = httpx.Client(timeout=self.timeout_s, headers=headers,
                                          limits=httpx.Limits(max_connections=self.concurrency))
            return self._http

    def _request(self, method: str, path: str, body: Optional[dict] = None, deadline: Optional[float] = None) -> dict:
        """The JSON answer of one request, retried on what a retry can fix; one-line errors."""
        import httpx
        where = f"{self.url}{path}"
        for attempt in range(self.retries + 1):
            r = None
            timeout = self.timeout_s
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    raise ServedGraderError(f"{where}: the batch's deadline_s={self.deadline_s:g} ran out")
            try:
                r = self._client().request(method, where, json=body, timeout=timeout)
            except httpx.TimeoutException:
                problem = f"no answer within {timeout:g} s (timeout_s={self.timeout_s:g}, deadline_s={self.deadline_s:g})"
            except httpx.TransportError as e:
                problem = f"unreachable ({type(e).__name__}: {e})"
            else:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        raise ServedGraderError(f"{where} answered 200 with a body that is not JSON: "
                                                f"{r.text[:200]!r}") from None
                problem = f"answered {r.status_code}: {_detail(r)}"
                if r.status_code not in _RETRY_STATUS:
                    raise ServedGraderError(f"{where} {problem}")
            if attempt == self.retries:
                break
            wait = _retry_after(r) or min(8.0, 0.5 * 2 ** attempt) * (0.5 + random.random())
            if deadline is not None and time.monotonic() + wait > deadline:
                raise ServedGraderError(f"{where} {problem}; the batch's deadline_s={self.deadline_s:g} ran out")
            time.sleep(wait)
        raise ServedGraderError(f"{where} {problem} (after {self.retries + 1} tries)")

    def _list_models(self) -> list[str]:
        try:
            data = self._request("GET", "/models").get("data")
        except ServedGraderError as e:
            raise ServedGraderError(f"no served grader at {self.url}: {e}") from None
        if not isinstance(data, list):
            raise ServedGraderError(f"{self.url}/models did not list models; is this an OpenAI-compatible API root?")
        entries = [m for m in data if isinstance(m, dict)]
        # vLLM lists each model's context length; others do not say
        self.max_model_len = next((int(m["max_model_len"]) for m in entries if isinstance(m.get("max_model_len"), int)), None)
        return [str(m.get("id")) for m in entries]

    def _pick(self, model: Optional[str]) -> str:
        if model is None:
            if len(self.models) != 1:
                raise ServedGraderError(f"{self.url} serves {self.models or 'no models'}; name one with model=")
            return self.models[0]
        if self.models and model not in self.models:
            raise ServedGraderError(f"{self.url} does not serve model {model!r}; it serves {self.models}")
        return model

    # ------------------------------------------------------------------------------ answering
    def answer(self, prompt: str, deadline: Optional[float] = None) -> tuple[float, float]:
        """(P(yes) / (P(yes) + P(no)), P(yes) + P(no)) of one prompt's next token. Spellings outside
        the top-k count 0; with neither in it the answer is unknown: 0.5 with mass 0 (``missing``)."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                "logprobs": self.top_k, **self.extra_body}
        out = self._request("POST", "/completions", body, deadline)
        choices = out.get("choices") if isinstance(out, dict) else None
        top = top_logprobs(choices[0]) if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if top is None:
            raise ServedGraderError(f"{self.url}/completions returned no top log-probs (model {self.model!r}); the "
                                    "grader needs an endpoint that honours `logprobs` on completions")
        p_yes = sum(math.exp(v) for k, v in top.items() if k in self.yes)
        p_no = sum(math.exp(v) for k, v in top.items() if k in self.no)
        with self._lock:
            self.asked += 1
            self.missing += p_yes + p_no == 0.0
        mass = p_yes + p_no
        return (p_yes / mass if mass > 0 else 0.5), mass

    def ask(self, groups: Sequence[Sequence[str]], progress=None) -> list[list[tuple[float, float]]]:
        """``answer`` of every prompt, grouped per completion: a group's prompts (which share their
        transcript) go in order, ``concurrency`` groups at a time. ``progress(n)`` is called as
        groups finish. Fails with ``ServedGraderError`` if any prompt fails or ``deadline_s`` runs out."""
        deadline = time.monotonic() + self.deadline_s
        out: list = [None] * len(groups)
        failed = threading.Event()  # one failure ends the batch: the other groups stop asking

        def one(i: int) -> None:
            try:
                answers = []
                for p in groups[i]:
                    if failed.is_set():
                        return
                    answers.append(self.answer(p, deadline))
                out[i] = answers
            except BaseException:
                failed.set()
                raise
            if progress is not None:
                progress(1)

        if self.concurrency == 1 or len(groups) <= 1:
            for i in range(len(groups)):
                one(i)
        else:
            pool = ThreadPoolExecutor(min(self.concurrency, len(groups)))
            try:
                for f in [pool.submit(one, i) for i in range(len(groups))]:
                    f.result()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        missing = sum(m == 0.0 for g in out for _, m in g)
        if missing:
            warnings.warn(f"served grader {self.url}: {missing} of {sum(map(len, out))} answers had no yes/no spelling among "
                          f"the top {self.top_k} log-probs (P(yes) 0.5, mass 0 there); raise top_k if the server "
                          "allows it", stacklevel=3)
        return out


def _detail(r) -> str:
    try:
        d = r.json()
        d = d.get("detail") or d.get("error") or d
        d = d.get("message", d) if isinstance(d, dict) else d
    except ValueError:
        d = r.text
    return " ".join(str(d).split())[:300]


def _retry_after(r) -> Optional[float]:
    try:
        return min(30.0, float(r.headers["retry-after"])) if r is not None else None
    except (KeyError, ValueError, AttributeError):
        return None
