"""The LLM grader: P(yes) for each (completion, proposition) from a causal LM's next-token
distribution, with the shared-prefix layout of ``packing`` and the fused yes/no op on the final
hidden state at the answer positions only (the ``[tokens, vocab]`` logits are never formed)."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import torch

from ..ops import fused_linear_yes_no
from ..rules import RuleSpec
from . import embedded
from .packing import buckets, pack
from .prompts import INSTRUCTIONS, PROMPT_INSTRUCTIONS, Completion, Conversation, PromptLayout, transcript

# Configuration attributes of models whose logits are not ``hidden @ lm_head.T`` (+ bias).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


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


def _default_device(device) -> torch.device:
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


class Grader:
    """Answers a rule spec's yes/no questions about completions with a causal LM.

    Args:
        model: a transformers causal LM (its ``base_model`` gives the final hidden states and
            ``get_output_embeddings()`` the LM head).
        tokenizer: its tokenizer; the chat template is used when it has one.
        spec: the rule spec whose propositions are asked (default: the shipped safety spec).
        token_budget: most tokens (rows x padded length) in one forward pass.
        max_length: longest prompt (prefix + one question) the model sees; longer conversations are
            cut from the left with a warning (default: the model's ``max_position_embeddings``).
        few_shot: put each proposition's examples before its question.
        progress: tqdm bar over batches (default: when stderr is a terminal).
    """

    def __init__(self, model, tokenizer, spec: Optional[RuleSpec] = None, *, token_budget: int = 8192,
                 max_length: Optional[int] = None, few_shot: bool = False, progress: Optional[bool] = None):
        for attr in _LOGIT_TRANSFORMS:
            if getattr(model.config, attr, None) not in (None, 1, 1.0):
                raise NotImplementedError(f"the grader reads logits as hidden @ lm_head.T; this model's config sets "
                                          f"{attr}={getattr(model.config, attr)}, which it does not apply")
        attn = getattr(model.config, "_attn_implementation", None)
        if attn != "sdpa":
            # the tree mask is a boolean 4-D mask: SDPA applies it; eager attention would add it to
            # the scores and flash-attention cannot take it, so both would grade wrongly
            raise ValueError(f"the grader needs attn_implementation='sdpa' (the model uses {attn!r}); load it with "
                             "attn_implementation='sdpa' or call model.set_attn_implementation('sdpa')")
        if not isinstance(token_budget, int) or token_budget < 1:
            raise ValueError(f"token_budget must be a positive int, got {token_budget!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec or RuleSpec.default()
        self._reply = _Questions(tokenizer, self.spec.propositions, few_shot, INSTRUCTIONS, "proposition")
        self._request = _Questions(tokenizer, self.spec.prompt_propositions, few_shot, PROMPT_INSTRUCTIONS,
                                   "prompt proposition")
        self.layout = self._reply.layout
        self.token_budget = token_budget
        limit = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        # a sliding-window model attends only that far back; the tree mask does not encode the
        # window, so prompts are kept within it
        window = getattr(model.config, "sliding_window", None)
        if window:
            limit = min(limit, window)
        self.max_length = min(max_length or limit, limit)
        self.progress = progress
        self.truncated = 0  # prompts cut from the left so far
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path: Union[str, Path], gguf_file: Optional[str] = None,
                        dtype: Union[str, torch.dtype] = "auto", device=None, spec: Optional[RuleSpec] = None,
                        attn_implementation: str = "sdpa", **kwargs) -> "Grader":
        """Load any transformers causal LM (a local folder, a hub id, or a GGUF file in a folder).

        The packed layout needs an arbitrary (tree) attention mask, which SDPA takes and
        flash-attention does not, so ``attn_implementation`` defaults to ``"sdpa"`` on every device.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer
        dev = _default_device(device)
        dt = resolve_dtype(dtype, dev)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        tok = AutoTokenizer.from_pretrained(path, **extra)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, attn_implementation=attn_implementation, **extra)
        return cls(model.to(dev), tok, spec, **kwargs)

    @classmethod
    def default(cls, dtype: Union[str, torch.dtype] = "auto", device=None, spec: Optional[RuleSpec] = None,
                **kwargs) -> "Grader":
        """The embedded SmolLM2-135M-Instruct grader (see ``rbr_fast.grading.embedded``)."""
        dev = _default_device(device)
        model, tok = embedded.load(resolve_dtype(dtype, dev))
        model.config._attn_implementation = "sdpa"
        return cls(model.to(dev), tok, spec, **kwargs)

    def fingerprint(self) -> str:
        """A hash of what determines the grades (model, dtype, prompt layout, spec): grade caches
        made by another grader are not reused."""
        import hashlib
        cfg = self.model.config
        # a cheap digest of the weights: a strided sample of every tensor
        sample = [float(t.detach().flatten()[:: max(1, t.numel() // 101)].double().sum()) for t in self.model.parameters()]
        key = [getattr(cfg, "_name_or_path", ""), cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size,
               cfg.vocab_size, str(next(self.model.parameters()).dtype), sample,
               self._reply.layout.few_shot, self.max_length, self.spec.fingerprint(), self.layout.head]
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
                i: int) -> tuple[list[int], bool]:
        """Head + transcript ids, the transcript cut from the left so that it fits ``max_length``
        with the longest question of its kind (the same cut whichever propositions are asked)."""
        head = q.layout.head
        body = q.layout.encode(transcript(conversation, completion, i))
        longest_tail = q.longest
        room = self.max_length - len(head) - longest_tail
        if room < 1:
            raise ValueError(f"max_length={self.max_length} leaves no room for the conversation after the "
                             f"instructions ({len(head)} tokens) and the longest question ({longest_tail})")
        cut = len(body) > room
        return head + (body[-room:] if cut else body), cut

    def prompt_ids(self, conversation: Conversation, completion: Completion, proposition: str) -> list[int]:
        """The token ids of one full prompt (what the one-prompt-per-question layout feeds the model;
        the answer is read after its last id)."""
        return self._prefix(self._reply, conversation, completion, 0)[0] + self.question_ids(proposition)

    # ---------------------------------------------------------------------------------- grading
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
        if isinstance(conversations, (str, bytes)) or isinstance(completions, (str, bytes)):
            raise TypeError("conversations and completions must be sequences (one item per completion), not a string")
        if len(conversations) != len(completions):
            raise ValueError(f"got {len(conversations)} conversations but {len(completions)} completions")
        missing = [i for i, c in enumerate(completions) if c is None]
        if missing:
            raise TypeError(f"completions[{missing[0]}] is None; give the reply text (grade_prompts asks about "
                            "conversations alone)")
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
        names = q.names(propositions, self.spec.source)
        tails = [q.tail(n) for n in names]
        N, P = len(completions), len(names)
        p_yes = torch.empty(N, P, dtype=torch.float32)
        mass = torch.empty(N, P, dtype=torch.float32)
        if N == 0:
            return Grades(p_yes, mass, names)
        prefixes, cut = zip(*(self._prefix(q, c, r, i) for i, (c, r) in enumerate(zip(conversations, completions))))
        if any(cut):
            self.truncated += sum(cut)
            warnings.warn(f"grader: {sum(cut)} of {N} conversations were longer than max_length={self.max_length} "
                          f"tokens and were cut from the left (total so far: {self.truncated})", stacklevel=3)
        batches = buckets([len(p) for p in prefixes], sum(len(t) for t in tails), self.token_budget)
        device = next(self.model.parameters()).device
        trunk, head = self.model.base_model, self.model.get_output_embeddings()
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        from tqdm.auto import tqdm
        with tqdm(total=N, desc="grading", unit="completion", disable=not show) as bar:
            for rows in batches:
                x = pack([prefixes[i] for i in rows], tails, self.pad_id)
                hidden = trunk(input_ids=x.input_ids.to(device), position_ids=x.position_ids.to(device),
                               attention_mask=x.attention_mask.to(device), use_cache=False).last_hidden_state
                h = hidden.gather(1, x.answer_index.to(device)[..., None].expand(-1, -1, hidden.shape[-1]))
                out = fused_linear_yes_no(h.reshape(-1, h.shape[-1]), head.weight, self.yes_ids, self.no_ids,
                                          bias=head.bias)
                idx = torch.tensor(rows)
                p_yes[idx] = out.p_yes.view(len(rows), P).cpu()
                mass[idx] = out.mass.view(len(rows), P).cpu()
                bar.update(len(rows))
        return Grades(p_yes, mass, names)
