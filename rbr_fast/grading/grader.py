"""The LLM grader: P(yes) for each (completion, proposition) from a causal LM's next-token
distribution, with the shared-prefix layout of ``packing`` and the fused yes/no op on the final
hidden state at the answer positions only (the ``[tokens, vocab]`` logits are never formed)."""
from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Sequence, Union

import torch

from ..ops import fused_linear_yes_no
from ..errors import UserError
from ..rules import ANSWERED_BY, RuleSpec
from . import embedded, memory
from .features import OPENING, POOLINGS, capture, pool, pooled_features
from .heads import PropositionHeads
from .packing import buckets, pack, right_pad
from .prompts import INSTRUCTIONS, PROMPT_INSTRUCTIONS, Completion, Conversation, PromptLayout
from .served import ServedClient, ServedGraderError

DEFAULT_TOKEN_BUDGET = 8192
# Configuration attributes of models whose logits are not ``hidden @ lm_head.T`` (+ bias).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class Prefix(NamedTuple):
    """One completion's head + transcript ids and where its pieces lie (half-open token ranges; a
    range is empty when that piece was cut away or absent)."""
    ids: list[int]
    cut: bool  # the transcript was cut from the left to fit max_length
    conversation: tuple[int, int]
    reply: tuple[int, int]


class Grades(NamedTuple):
    p_yes: torch.Tensor  # [N, P] float32: P(yes) / (P(yes) + P(no))
    mass: torch.Tensor  # [N, P] float32: P(yes) + P(no), how much the model answers in yes/no at all
    propositions: list[str]  # the P column names


def _has_amx() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def resolve_dtype(dtype: Union[str, torch.dtype], device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA and on CPUs with AMX, float32 on other CPUs (without AMX, bf16
    matmuls are emulated and several times slower than float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" or (device.type == "cpu" and _has_amx()) else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"dtype must be 'auto', float32, bfloat16, float16 or a torch.dtype, got {dtype!r}") from None


class _Questions:
    """One kind of question (about the reply, or about the request): its prompt layout, the
    propositions asked that way, and their tokenised tails."""

    def __init__(self, tokenizer, props: dict, few_shot: bool, instructions: str, what: str):
        self.layout = PromptLayout.for_tokenizer(tokenizer, few_shot=few_shot, instructions=instructions)
        self.props = props
        self.what = what
        self._tails: dict[str, list[int]] = {}
        # the truncation room is set by the longest question of the kind, whichever are asked
        self.longest = max((len(self.tail(n)) for n in props), default=0)

    def tail(self, name: str) -> list[int]:
        if name not in self._tails:
            self._tails[name] = self.layout.tail(self.props[name])
        return self._tails[name]

    def names(self, propositions: Optional[Sequence[str]], source: str) -> list[str]:
        names = list(self.props) if propositions is None else list(propositions)
        unknown = [n for n in names if n not in self.props]
        if unknown:
            raise KeyError(f"unknown {self.what}(s) {unknown}; the spec ({source}) has {list(self.props)}")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"propositions must be non-empty and without repeats, got {names}")
        return names


def _warn_unheaded(heads: PropositionHeads, why_not: dict[str, str], priors: Sequence[str]) -> None:
    """One warning naming every proposition the heads file does not answer for this spec, and why."""
    parts = []
    if why_not:
        parts.append(f"no trained head for the definition of {len(why_not)} proposition(s), answered zero-shot by "
                     "the question path, which a small grader does near chance (`rbr-fast train-grader --spec SPEC "
                     "--data ROWS` trains heads for them): " + ", ".join(f"{n} ({why})" for n, why in why_not.items()))
    if priors:
        parts.append("too few labels for a head, answered by a constant prior (no signal): "
                     + ", ".join(f"{n} {heads.priors[n]:.3f}" for n in priors))
    if parts:
        warnings.warn(f"grader heads {heads.source}: " + "; ".join(parts), stacklevel=3)


_SERVED_OPTIONS = ("model", "tokenizer", "top_k", "concurrency", "timeout_s", "retries", "deadline_s", "max_length")


def served_grader_url(model) -> Optional[tuple[str, dict]]:
    """(base URL, options) when ``model`` names a served grader: an http(s) URL, with options after
    ``#`` (never sent to the server), e.g. ``http://127.0.0.1:8000/v1#model=llama-8b&concurrency=16``;
    None for anything else."""
    if not isinstance(model, str) or not model.startswith(("http://", "https://")):
        return None
    from urllib.parse import parse_qsl
    url, _, fragment = model.partition("#")
    opts = dict(parse_qsl(fragment, keep_blank_values=True))
    unknown = sorted(set(opts) - set(_SERVED_OPTIONS))
    if unknown:
        raise ServedGraderError(f"unknown served-grader option(s) {unknown} in {model!r}; known: {list(_SERVED_OPTIONS)}")
    for k in ("top_k", "concurrency", "retries", "max_length"):
        if k in opts:
            opts[k] = _parse(int, k, opts[k], model)
    for k in ("timeout_s", "deadline_s"):
        if k in opts:
            opts[k] = _parse(float, k, opts[k], model)
    return url, opts


def _parse(kind, key, value, where):
    try:
        return kind(value)
    except ValueError:
        raise ServedGraderError(f"{key}={value!r} in {where!r} is not a{'n int' if kind is int else ' number'}") from None


def load_grader(spec: RuleSpec, model: Optional[str] = None, *, grader_url: Optional[str] = None,
                **grader_kwargs) -> Grader:
    """The grader every reward, adapter, server, command and PPO run loads: ``model`` through
    ``Grader.from_pretrained`` (a folder or hub id, with ``revision``, ``token``, ``gguf_file``,
    ``heads``, ...), a served grader when ``model`` is an http(s) URL (``served_grader_url``;
    ``Grader.from_server``), else the embedded SmolLM2 with its shipped heads (``Grader.default``;
    ``trained=False`` asks every question). ``grader_url`` (a URL in the same form) adds a served
    model to a local grader: it answers what the heads do not (and what the spec routes to it)."""
    served = served_grader_url(model)
    if served is not None:
        if grader_url is not None:
            raise ServedGraderError("grader_url adds a served model to a local grader; the grader here is served "
                                    "already")
        url, opts = served
        return Grader.from_server(url, spec=spec, **{**opts, **grader_kwargs})
    if grader_url is not None:
        grader_kwargs["served"] = grader_url
    if model and model != "embedded":
        return Grader.from_pretrained(model, spec=spec, **grader_kwargs)
    hub = {"revision", "token", "gguf_file"}
    given = sorted(k for k in hub if grader_kwargs.get(k))
    if given:
        raise ValueError(f"{', '.join(given)} need a model (a folder or hub id); the embedded grader has none")
    return Grader.default(spec=spec, **{k: v for k, v in grader_kwargs.items() if k not in hub})


def _spellings(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text of each token, as a server lists it among the top log-probs."""
    return [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]


def _served_tokenizer(tokenizer, model: str):
    """The served model's tokenizer (for its chat template and yes/no spellings): a tokenizer,
    ``"embedded"``, a local folder or hub id; by default the embedded one when the server serves
    the embedded GGUF, else ``model`` read as a folder or hub id."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    if tokenizer is None and Path(model).name == embedded.GGUF_FILE:
        tokenizer = "embedded"
    from transformers import AutoTokenizer
    if tokenizer == "embedded":
        return AutoTokenizer.from_pretrained(embedded.path())
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer or model))
    except (OSError, ValueError) as e:
        raise ServedGraderError(f"cannot load the tokenizer of served model {model!r} ({type(e).__name__}); "
                                "give its local folder or hub id with tokenizer=") from None


def _default_device(device) -> torch.device:
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


# attention implementations that take the packed layout's tree mask
TREE_MASK_ATTENTION = ("sdpa", "flex_attention")


def default_attention(device: torch.device) -> str:
    """FlexAttention on CUDA, where its kernel skips the tree mask's empty blocks; SDPA elsewhere
    (FlexAttention on CPU compiles through inductor, tens of seconds per new shape)."""
    return "flex_attention" if device.type == "cuda" else "sdpa"


class Grader:
    """Answers a rule spec's yes/no questions about completions with a causal LM.

    Args:
        model: a transformers causal LM (its ``base_model`` gives the final hidden states and
            ``get_output_embeddings()`` the LM head).
        tokenizer: its tokenizer; the chat template is used when it has one.
        spec: the rule spec whose propositions are asked (default: the shipped safety spec).
        token_budget: most tokens (rows x padded length) in one forward pass (default 8192, or what
            ``memory_gib`` allows).
        memory_gib: cap on the memory the grader takes (its weights + one pass's activations, see
            ``grading.memory``): the in-process GPU mode beside a trainer whose GPU is mostly taken.
            Passes are sized to fit (within ``token_budget`` when both are given); where one
            ``max_length`` row would not fit, conversations are cut to what does, with one warning.
        max_length: longest prompt (prefix + one question) the model sees; longer conversations are
            cut from the left with a warning (default: the model's ``max_position_embeddings``).
        few_shot: put each proposition's examples before its question.
        progress: tqdm bar over batches (default: when stderr is a terminal).
        heads: trained proposition heads (``PropositionHeads``, or a path to a heads file) for this
            model and spec: the propositions they cover are answered by their heads from one
            forward pass over the transcript; the others are asked as questions in the same pass.
        priors: answer the propositions the heads file holds only a prior for (too few labels to
            train a head) with that constant base rate, instead of asking them: asking even a few
            questions needs every layer and the question tokens (about half the speed), for answers
            that a small zero-shot grader gives at chance level.
        served: a served grader (``Grader.from_server``, or its URL in ``served_grader_url``'s form)
            that answers, instead of this model's question path, every proposition with no head
            or prior, and those routed to it.
        route: ``{proposition: "head" | "prior" | "question" | "served"}``, pinning how each named
            proposition is answered (over the spec's own ``answered_by`` keys); see ``answered_by``.
        client: a ``ServedClient``: this grader has no model and asks every question of the
            server (what ``from_server`` builds; ``model`` is then None and ``tokenizer`` the
            served model's).
    """

    def __init__(self, model, tokenizer, spec: Optional[RuleSpec] = None, *, token_budget: Optional[int] = None,
                 memory_gib: Optional[float] = None, max_length: Optional[int] = None, few_shot: bool = False,
                 progress: Optional[bool] = None,
                 heads: Union[PropositionHeads, str, Path, None] = None, priors: bool = True,
                 served: Union["Grader", str, None] = None, route: Optional[Mapping[str, str]] = None,
                 client: Optional[ServedClient] = None):
        if (model is None) == (client is None):
            raise ValueError("a Grader takes a model, or (Grader.from_server) a served client, not both or neither")
        if client is not None:
            if memory_gib is not None:
                raise ValueError("memory_gib caps a local model's memory; a served grader loads none")
            self._init_prompts(None, tokenizer, spec, few_shot, token_budget, max_length or 4096, progress)
            self.client, self.served, self.heads, self.priors, self._answers = client, None, None, priors, {}
            client.yes, client.no = (frozenset(_spellings(tokenizer, ids)) for ids in (self.yes_ids, self.no_ids))
            self._route = self._pinned(route)
            return
        for attr in _LOGIT_TRANSFORMS:
            if getattr(model.config, attr, None) not in (None, 1, 1.0):
                raise NotImplementedError(f"the grader reads logits as hidden @ lm_head.T; this model's config sets "
                                          f"{attr}={getattr(model.config, attr)}, which it does not apply")
        attn = getattr(model.config, "_attn_implementation", None)
        if attn not in TREE_MASK_ATTENTION:
            # the tree mask is a boolean 4-D mask (SDPA) or a BlockMask (FlexAttention); eager attention
            # would add it to the scores and flash-attention cannot take it, so both would grade wrongly
            raise ValueError(f"the grader needs attn_implementation 'sdpa' or 'flex_attention' (the model uses "
                             f"{attn!r}); load it with one of them or call model.set_attn_implementation('sdpa')")
        limit = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        # a sliding-window model attends only that far back; the tree mask does not encode the
        # window, so prompts are kept within it
        window = getattr(model.config, "sliding_window", None)
        if window:
            limit = min(limit, window)
        self.model = model.eval()
        self._init_prompts(model, tokenizer, spec, few_shot, token_budget, min(max_length or limit, limit), progress)
        self.client = None
        self.served: Optional[Grader] = None
        if served is not None:
            if not isinstance(served, Grader) and served_grader_url(served) is None:
                raise ServedGraderError(f"served must be a served grader or its http(s) URL, got {served!r}")
            self.served = served if isinstance(served, Grader) else load_grader(self.spec, served)
            if self.served.client is None or self.served.spec.fingerprint() != self.spec.fingerprint():
                raise ValueError("served must be a served grader (Grader.from_server or its URL) of the same spec")
        self.heads: Optional[PropositionHeads] = None
        self.priors = priors
        self._answers: dict[str, str] = {}  # what the heads file answers: name -> "head" / "prior"
        why_not: dict[str, str] = {}
        if heads is not None:
            heads = heads if isinstance(heads, PropositionHeads) else PropositionHeads.load(heads)
            heads.check(self)
            self.heads = heads
            self._answers, why_not = heads.answerable(self.spec)
        self._route = self._pinned(route)
        if heads is not None:
            by = self.answered_by
            _warn_unheaded(heads, {n: w for n, w in why_not.items() if by.get(n) == "question"},
                           [n for n, a in by.items() if a == "prior"])
        if memory_gib is not None:
            self._cap_memory(memory_gib, token_budget)

    def _cap_memory(self, memory_gib: float, token_budget: Optional[int]) -> None:
        """Set ``token_budget`` (and, where the longest row would not fit, ``max_length``) from the cap."""
        by = self.answered_by
        kept = len(self.heads.layers) if self.heads is not None and "head" in by.values() else 0
        # a packed row holds the prefix (cut to max_length with room for the longest question) plus every
        # question asked of it: the longest row is max_length plus the other questions' tails
        extra = max([sum(len(q.tail(n)) for n in q.props if by.get(n) == "question") - q.longest
                     for q in (self._reply, self._request)] + [0])
        fits = memory.token_budget(self.model, memory_gib, kept, self.max_length + extra)
        self.token_budget = min(fits, token_budget or fits)  # a longer row still gets a pass of its own
        over = self.max_length + extra - fits
        if over > 0:
            least = max(len(q.layout.head) + q.longest for q in (self._reply, self._request)) + 64
            if self.max_length - over < least:
                raise ValueError(f"memory_gib={memory_gib:g} holds {fits} tokens per pass, too few for one short "
                                 f"conversation with its questions ({least + extra} tokens): raise memory_gib, or ask "
                                 "fewer questions (trained heads)")
            warnings.warn(f"grader: memory_gib={memory_gib:g} holds {fits} tokens per pass, so conversations are cut "
                          f"to max_length={self.max_length - over} tokens (was {self.max_length})", stacklevel=3)
            self.max_length -= over

    def _init_prompts(self, model, tokenizer, spec, few_shot, token_budget, max_length, progress) -> None:
        """What the in-process and the served question paths share: the spec, prompt layouts, limits."""
        if token_budget is None:
            token_budget = DEFAULT_TOKEN_BUDGET
        if not isinstance(token_budget, int) or isinstance(token_budget, bool) or token_budget < 1:
            raise ValueError(f"token_budget must be a positive int, got {token_budget!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec or RuleSpec.default()
        self._reply = _Questions(tokenizer, self.spec.propositions, few_shot, INSTRUCTIONS, "proposition")
        self._request = _Questions(tokenizer, self.spec.prompt_propositions, few_shot, PROMPT_INSTRUCTIONS,
                                   "prompt proposition")
        self.layout = self._reply.layout
        self.token_budget = token_budget
        self.max_length = max_length
        self.progress = progress
        self.truncated = 0  # prompts cut from the left so far
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        self._lock = threading.Lock()  # capture hooks live on the shared model: one pass at a time

    def _pinned(self, route: Optional[Mapping[str, str]]) -> dict[str, str]:
        """The spec's ``answered_by`` keys, overridden by ``route``, each checked against what this
        grader has (a head or prior for that exact definition, a model, a served grader)."""
        props = {**self.spec.propositions, **self.spec.prompt_propositions}
        pinned = {n: p.answered_by for n, p in props.items() if p.answered_by}
        for n, how in (route or {}).items():
            if n not in props:
                raise KeyError(f"route names unknown proposition {n!r}; the spec ({self.spec.source}) has {list(props)}")
            if how not in ANSWERED_BY:
                raise ValueError(f"route[{n!r}] must be one of {ANSWERED_BY}, got {how!r}")
            pinned[n] = how
        have = {"served": self.client is not None or self.served is not None, "question": self.model is not None}
        for n, how in pinned.items():
            if how in ("head", "prior") and self._answers.get(n) != how:
                raise UserError(f"{n} is routed to a {how}, but the grader has no {how} for its definition"
                                 + ("" if self.heads is None else f" in {self.heads.source}"))
            if how in have and not have[how]:
                raise UserError(f"{n} is routed to {how!r}, but this grader has "
                                 + ("no served grader (give served= or grader_url=)" if how == "served"
                                    else "no in-process model (it is served-only)"))
        return pinned

    @property
    def answered_by(self) -> dict[str, str]:
        """How each proposition and prompt proposition is answered: "head" (a trained head for its
        exact definition), "prior" (a constant base rate, while ``priors`` is on), "question" (the
        in-process model asked zero-shot) or "served" (a served model asked); a route pinned by the
        spec or ``route`` comes first. Without a head or prior, a grader with a served one asks it."""
        fallback = "served" if self.client is not None or self.served is not None else "question"
        names = list(self.spec.propositions) + list(self.spec.prompt_propositions)
        out = {}
        for n in names:
            how = self._answers.get(n)
            how = how if how != "prior" or self.priors else None
            out[n] = self._route.get(n) or how or fallback
        return out

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path: Union[str, Path], gguf_file: Optional[str] = None,
                        dtype: Union[str, torch.dtype] = "auto", device=None, spec: Optional[RuleSpec] = None,
                        attn_implementation: Optional[str] = None, revision: Optional[str] = None,
                        token: Optional[str] = None, **kwargs) -> "Grader":
        """Load any transformers causal LM (a local folder, a hub id, or a GGUF file in a folder);
        ``revision`` and ``token`` go to transformers for a hub id, ``kwargs`` to ``Grader``.

        The packed layout needs an arbitrary (tree) attention mask, which SDPA and FlexAttention
        take and flash-attention does not; ``attn_implementation`` defaults to ``default_attention``
        of the device (FlexAttention on CUDA, SDPA elsewhere and for a model class without FlexAttention).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer
        dev = _default_device(device)
        dt = resolve_dtype(dtype, dev)
        extra = {k: v for k, v in (("gguf_file", gguf_file), ("revision", revision), ("token", token)) if v}
        tok = AutoTokenizer.from_pretrained(path, **extra)
        attn = attn_implementation or default_attention(dev)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, attn_implementation=attn, **extra)
        except ValueError:  # transformers refuses FlexAttention for a model class without it
            if attn_implementation is not None or attn == "sdpa":
                raise
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, attn_implementation="sdpa", **extra)
        return cls(model.to(dev), tok, spec, **kwargs)

    @classmethod
    def default(cls, dtype: Union[str, torch.dtype] = "auto", device=None, spec: Optional[RuleSpec] = None,
                trained: bool = True, **kwargs) -> "Grader":
        """The embedded SmolLM2-135M-Instruct grader (see ``rbr_fast.grading.embedded``).

        ``trained`` (default): the shipped proposition heads (``embedded.HEADS``, trained by ``rbr-fast
        train-grader``) answer every proposition of ``spec`` whose definition they were trained for
        (an edited or new one is asked, with one warning naming it); ``False`` asks every question
        zero-shot."""
        dev = _default_device(device)
        model, tok = embedded.load(resolve_dtype(dtype, dev))
        model.set_attn_implementation(default_attention(dev))
        spec = spec or RuleSpec.default()
        if trained is not False and "heads" not in kwargs:
            kwargs["heads"] = embedded.default_heads()
        return cls(model.to(dev), tok, spec, **kwargs)

    @classmethod
    def from_server(cls, base_url: str, model: Optional[str] = None, api_key: Optional[str] = None, *,
                    tokenizer=None, spec: Optional[RuleSpec] = None, top_k: int = 20, concurrency: int = 4,
                    timeout_s: float = 60.0, retries: int = 4, deadline_s: float = 3600.0,
                    extra_body: Optional[dict] = None, max_length: Optional[int] = None, **kwargs) -> "Grader":
        """A grader whose every question is answered by a model behind an OpenAI-compatible
        ``/v1/completions`` endpoint (vLLM, SGLang, llama.cpp, a hosted API): same ``Grades``, same
        prompts and yes/no spellings as the in-process question path (``grading.served``).

        Args:
            base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
            model: the served model's name (default: the only one the server lists).
            api_key: bearer token (default ``$RBR_FAST_API_KEY``, else ``$OPENAI_API_KEY``).
            tokenizer: the served model's tokenizer (its chat template lays out the prompts, its
                yes/no tokens are read): a tokenizer, a local folder or hub id, or ``"embedded"``;
                default: ``model`` as a folder or hub id (the embedded one for the embedded GGUF).
            max_length: longest prompt in tokens; longer transcripts are cut from the left (default:
                the ``max_model_len`` the server lists, else 4096; llama-cpp-python serves 2048
                unless started with a larger ``--n_ctx``).
            top_k, concurrency, timeout_s, retries, deadline_s, extra_body: ``ServedClient``'s.
            kwargs: for ``Grader`` (``spec``, ``few_shot``, ``progress``, ``route``).
        Raises ``ServedGraderError`` (one line naming the URL) when the server cannot be used.
        """
        client = ServedClient(base_url, model, api_key, top_k=top_k, concurrency=concurrency, timeout_s=timeout_s,
                              retries=retries, deadline_s=deadline_s, extra_body=extra_body)
        for k in ("heads", "served", "client"):
            if kwargs.get(k) is not None:
                raise ServedGraderError(f"a served grader takes no {k}= (it has no local model); use a local grader "
                                        "with served=URL (grader_url=, --grader-url) to mix heads with a served model")
            kwargs.pop(k, None)
        for k in ("dtype", "device", "memory_gib", "trained", "revision", "token", "gguf_file"):
            kwargs.pop(k, None)  # local-model options that every grader recipe may carry
        return cls(None, _served_tokenizer(tokenizer, client.model), spec, client=client,
                   max_length=max_length or client.max_model_len or 4096, **kwargs)

    def model_signature(self) -> dict:
        """What identifies the model whatever its dtype or where it was loaded from: its shape and the
        absolute sum of a strided sample of every weight tensor (compare with ``heads.same_model``);
        for a served grader, its URL and model name."""
        if self.model is None:
            return {"served": self.client.url, "model": self.client.model}
        cfg = self.model.config
        sample = [float(t.detach().flatten()[:: max(1, t.numel() // 101)].double().abs().sum())
                  for t in self.model.parameters()]
        return {"model_type": cfg.model_type, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                "vocab": cfg.vocab_size, "weights": sample}

    def fingerprint(self) -> str:
        """A hash of what determines the grades (model, dtype, prompt layout, spec): grade caches
        made by another grader are not reused."""
        import hashlib
        local = self.model is not None
        key = [getattr(self.model.config, "_name_or_path", "") if local else "", self.model_signature(),
               str(next(self.model.parameters()).dtype) if local else "served", self._reply.layout.few_shot,
               self.max_length, self.spec.fingerprint(), self.layout.head]
        if self.served is not None or self._route:  # how each proposition is answered changes its grades
            key += [self.answered_by, self.served.fingerprint() if self.served is not None else None]
        return hashlib.sha256(repr(key).encode()).hexdigest()[:16]

    def features_fingerprint(self) -> str:
        """A hash of what determines ``features`` (model and dtype, instructions, truncation room):
        feature caches made by another grader are not reused."""
        import hashlib
        key = [self.model_signature(), str(next(self.model.parameters()).dtype), self.layout.head,
               self.max_length - self._reply.longest, POOLINGS, OPENING]
        return hashlib.sha256(repr(key).encode()).hexdigest()[:16]

    # ---------------------------------------------------------------------------------- prompts
    @property
    def yes_ids(self) -> list[int]:
        return self.layout.yes_ids

    @property
    def no_ids(self) -> list[int]:
        return self.layout.no_ids

    def question_ids(self, name: str) -> list[int]:
        """Token ids that follow the conversation for proposition ``name`` (its question and the
        start of the answer turn)."""
        return self._reply.tail(self._reply.names([name], self.spec.source)[0])

    def _prefix(self, q: _Questions, conversation: Conversation, completion: Optional[Completion],
                i: int) -> Prefix:
        """Head + transcript ids, the transcript cut from the left so that it fits ``max_length``
        with the longest question of its kind (the same cut whichever propositions are asked)."""
        head = q.layout.head
        body, n_conv, n_reply = q.layout.body(conversation, completion, i)
        room = self.max_length - len(head) - q.longest
        if room < 1:
            raise ValueError(f"max_length={self.max_length} leaves no room for the conversation after the "
                             f"instructions ({len(head)} tokens) and the longest question ({q.longest})")
        cut = max(0, len(body) - room)
        ids = head + body[cut:]
        start = len(head)
        conv = (start, start + max(0, n_conv - cut))
        reply = (len(ids) - min(n_reply, len(ids) - start), len(ids))
        return Prefix(ids, cut > 0, conv, reply)

    def prompt_ids(self, conversation: Conversation, completion: Completion, proposition: str) -> list[int]:
        """The token ids of one full prompt (what the one-prompt-per-question layout feeds the model;
        the answer is read after its last id)."""
        return self._prefix(self._reply, conversation, completion, 0).ids + self.question_ids(proposition)

    # ---------------------------------------------------------------------------------- grading
    @staticmethod
    def _check_items(conversations, completions, prompt_only: bool = False) -> None:
        if isinstance(conversations, (str, bytes)) or isinstance(completions, (str, bytes)):
            raise TypeError("conversations and completions must be sequences (one item per completion), not a string")
        if len(conversations) != len(completions):
            raise ValueError(f"got {len(conversations)} conversations but {len(completions)} completions")
        missing = [i for i, c in enumerate(completions) if c is None]
        if missing and not prompt_only:
            raise TypeError(f"completions[{missing[0]}] is None; give the reply text (grade_prompts asks about "
                            "conversations alone)")

    def _warn_cut(self, prefixes: Sequence[Prefix]) -> None:
        cut = sum(p.cut for p in prefixes)
        if cut:
            self.truncated += cut
            warnings.warn(f"grader: {cut} of {len(prefixes)} conversations were longer than max_length="
                          f"{self.max_length} tokens and were cut from the left (total so far: {self.truncated})",
                          stacklevel=4)

    def _show(self) -> bool:
        return self.progress if self.progress is not None else sys.stderr.isatty()

    @torch.inference_mode()
    def features(self, conversations: Sequence[Conversation], completions: Sequence[Completion],
                 layers: Sequence[int], bar=None) -> torch.Tensor:
        """``[N, len(layers), len(POOLINGS), H]`` float32 hidden-state features (``features.POOLINGS``)
        of each completion: one forward pass over instructions + transcript, no question. A None
        completion gives the conversation's alone (what request heads read). ``bar``: a tqdm bar to
        advance (default: one of its own)."""
        self._check_items(conversations, completions, prompt_only=True)
        if self.model is None:
            raise ValueError("a served grader has no hidden states to give features of; heads need a local model")
        return self._features(conversations, completions, layers, bar)

    def _features(self, conversations, completions, layers, bar=None) -> torch.Tensor:
        prefixes = [self._prefix(self._reply, c, r, i) for i, (c, r) in enumerate(zip(conversations, completions))]
        self._warn_cut(prefixes)
        out = torch.empty(len(prefixes), len(layers), len(POOLINGS), self.model.config.hidden_size)
        from tqdm.auto import tqdm
        with self._lock, tqdm(total=len(prefixes), desc="features", unit="completion",
                              disable=bar is not None or not self._show()) as own:
            for rows in buckets([len(p.ids) for p in prefixes], 0, self.token_budget):
                ids, mask = right_pad([prefixes[i].ids for i in rows], self.pad_id)
                convs, replies = [prefixes[i].conversation for i in rows], [prefixes[i].reply for i in rows]
                out[torch.tensor(rows)] = self._attending(
                    lambda: pooled_features(self.model, ids, mask, convs, replies, layers))
                (bar or own).update(len(rows))
        return out

    @torch.inference_mode()
    def grade(self, conversations: Sequence[Conversation], completions: Sequence[Completion],
              propositions: Optional[Sequence[str]] = None) -> Grades:
        """P(yes) of every proposition for every (conversation, completion) pair.

        Args:
            conversations: per completion, the conversation it answers: a list of
                ``{"role", "content"}`` messages or a plain user prompt.
            completions: the replies to judge (strings or assistant message lists).
            propositions: names to ask (default: all of the spec's, in spec order).
        Returns:
            ``Grades(p_yes [N, P], mass [N, P], propositions)``; ``N == 0`` gives empty tensors.
        """
        self._check_items(conversations, completions)
        return self._grade(self._reply, conversations, completions, propositions)

    @torch.inference_mode()
    def grade_prompts(self, conversations: Sequence[Conversation],
                      propositions: Optional[Sequence[str]] = None) -> Grades:
        """P(yes) of the spec's ``prompt_propositions`` (questions about the user's request) per
        conversation, e.g. to infer the response type (``RuleSpec.infer_types``)."""
        if isinstance(conversations, (str, bytes)):
            raise TypeError("conversations must be a sequence, not a string")
        if not self._request.props:
            raise ValueError(f"the spec ({self.spec.source}) has no prompt_propositions")
        return self._grade(self._request, conversations, [None] * len(conversations), propositions)

    def _grade(self, q: _Questions, conversations, completions, propositions) -> Grades:
        """Heads answer the names they cover (mass 1: a head always answers), priors (when used) the
        names they hold, questions the rest. A head reads the reply layout's transcript; for
        questions about it, that is the same pass."""
        names = q.names(propositions, self.spec.source)
        heads = self.heads
        by = self.answered_by
        headed, prior, asked, served = ([n for n in names if by[n] == how] for how in ANSWERED_BY)
        N = len(completions)
        p_yes = torch.empty(N, len(names), dtype=torch.float32)
        mass = torch.ones(N, len(names), dtype=torch.float32)
        if N == 0:
            return Grades(p_yes, mass, names)
        if served:  # asked first: a dead server fails the batch before the local passes run
            grader = self if self.client is not None else self.served
            p, m = grader._ask_served(grader._reply if q is self._reply else grader._request,
                                      conversations, completions, served)
            cols = torch.tensor([names.index(n) for n in served])
            p_yes[:, cols], mass[:, cols] = p, m
        feats = None
        if asked:
            shared = self.heads.layers if headed and q is self._reply else None
            p, m, feats = self._ask(q, conversations, completions, asked, shared)
            cols = torch.tensor([names.index(n) for n in asked])
            p_yes[:, cols], mass[:, cols] = p, m
        if headed:
            if feats is None:
                feats = self._features(conversations, completions, heads.layers)
            p_yes[:, torch.tensor([names.index(n) for n in headed])] = heads.predict(feats, headed)
        for n in prior:
            p_yes[:, names.index(n)] = heads.priors[n]
        return Grades(p_yes, mass, names)

    def served_prompts(self, conversations: Sequence[Conversation], completions: Sequence[Completion],
                       propositions: Optional[Sequence[str]] = None) -> list[list[str]]:
        """Per completion, the text of each proposition's prompt: the ids the in-process question path
        feeds the model (``prompt_ids``), decoded, without the BOS token that the tokenizer adds
        itself (``add_bos_token``): a server tokenises the text and adds it. What a served grader sends."""
        self._check_items(conversations, completions)
        return self._served_prompts(self._reply, conversations, completions, self._reply.names(propositions, self.spec.source))

    def _served_prompts(self, q: _Questions, conversations, completions, names) -> list[list[str]]:
        prefixes = [self._prefix(q, c, r, i) for i, (c, r) in enumerate(zip(conversations, completions))]
        self._warn_cut(prefixes)
        # a BOS the server's tokenizer adds to any text (a chat template's own first token, such as
        # SmolLM2's <|im_start|> = its bos_token, stays: no tokenizer adds that one)
        bos = self.tokenizer.bos_token_id if getattr(self.tokenizer, "add_bos_token", False) else None
        tails = [q.tail(n) for n in names]

        def text(ids: list[int]) -> str:
            ids = ids[1:] if bos is not None and ids[:1] == [bos] else ids
            return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

        return [[text(p.ids + t) for t in tails] for p in prefixes]

    def _ask_served(self, q: _Questions, conversations, completions, names) -> tuple[torch.Tensor, torch.Tensor]:
        """(p_yes [N, P], mass [N, P]) from the served model: each completion's prompts go to the server
        in order, so its prefix cache serves the transcript to every question after the first."""
        groups = self._served_prompts(q, conversations, completions, names)
        from tqdm.auto import tqdm
        with tqdm(total=len(groups), desc="grading (served)", unit="completion", disable=not self._show()) as bar:
            answers = self.client.ask(groups, bar.update)
        out = torch.tensor(answers, dtype=torch.float32).reshape(len(groups), len(names), 2)
        return out[..., 0], out[..., 1]

    def _attending(self, forward):
        """``forward()``, a pass through the model. FlexAttention compiles on first use: where that
        fails (a GPU or Triton it does not support), the model goes back to SDPA for good, with one
        warning, and the pass runs again."""
        try:
            return forward()
        except torch.OutOfMemoryError:
            raise
        except Exception as e:
            if self.model.config._attn_implementation != "flex_attention":
                raise
            detail = ": " + str(e).splitlines()[0][:200] if str(e) else ""
            warnings.warn(f"grader: FlexAttention failed here ({type(e).__name__}{detail}); grading with SDPA "
                          "from now on", RuntimeWarning, stacklevel=4)
            self.model.set_attn_implementation("sdpa")  # a memory cap still holds: SDPA's mask takes less
            return forward()

    def _trunk(self, trunk, x, device) -> torch.Tensor:
        """The final hidden states of a packed batch, its tree mask in the form the model's attention
        takes (a BlockMask for FlexAttention, else the dense mask)."""
        def forward():
            flex = self.model.config._attn_implementation == "flex_attention"
            mask = x.block_mask(device) if flex else x.dense_mask().to(device)
            return trunk(input_ids=x.input_ids.to(device), position_ids=x.position_ids.to(device),
                         attention_mask=mask, use_cache=False).last_hidden_state

        return self._attending(forward)

    def _ask(self, q: _Questions, conversations, completions, names, layers: Optional[Sequence[int]]):
        """(p_yes [N, P], mass [N, P], features or None) of asking ``names`` in the packed layout;
        with ``layers``, the prefix's pooled features of those layers from the same pass."""
        tails = [q.tail(n) for n in names]
        N, P = len(completions), len(names)
        p_yes = torch.empty(N, P, dtype=torch.float32)
        mass = torch.empty(N, P, dtype=torch.float32)
        feats = None if layers is None else torch.empty(N, len(layers), len(POOLINGS), self.model.config.hidden_size)
        prefixes = [self._prefix(q, c, r, i) for i, (c, r) in enumerate(zip(conversations, completions))]
        self._warn_cut(prefixes)
        batches = buckets([len(p.ids) for p in prefixes], sum(len(t) for t in tails), self.token_budget)
        device = next(self.model.parameters()).device
        trunk, head = self.model.base_model, self.model.get_output_embeddings()
        from tqdm.auto import tqdm
        with self._lock, tqdm(total=N, desc="grading", unit="completion", disable=not self._show()) as bar:
            for rows in batches:
                x = pack([prefixes[i].ids for i in rows], tails, self.pad_id)
                with capture(self.model, layers or [], stop=False) as states:
                    hidden = self._trunk(trunk, x, device)
                h = hidden.gather(1, x.answer_index.to(device)[..., None].expand(-1, -1, hidden.shape[-1]))
                out = fused_linear_yes_no(h.reshape(-1, h.shape[-1]), head.weight, self.yes_ids, self.no_ids,
                                          bias=head.bias)
                idx = torch.tensor(rows)
                p_yes[idx] = out.p_yes.view(len(rows), P).cpu()
                mass[idx] = out.mass.view(len(rows), P).cpu()
                if feats is not None:  # a prefix token attends to the prefix only: its states are the plain pass's
                    conv, reply = [prefixes[i].conversation for i in rows], [prefixes[i].reply for i in rows]
                    feats[idx] = torch.stack([pool(states[l], conv, reply) for l in layers], 1).cpu()
                bar.update(len(rows))
        return p_yes, mass, feats
