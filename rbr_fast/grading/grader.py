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
from .prompts import Completion, Conversation, PromptLayout, transcript

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
        if not isinstance(token_budget, int) or token_budget < 1:
            raise ValueError(f"token_budget must be a positive int, got {token_budget!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec or RuleSpec.default()
        self.layout = PromptLayout.for_tokenizer(tokenizer, few_shot=few_shot)
        self.token_budget = token_budget
        limit = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        self.max_length = min(max_length or limit, limit)
        self.progress = progress
        self.truncated = 0  # prompts cut from the left so far
        self._tails: dict[str, list[int]] = {}
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
        if name not in self._tails:
            self._tails[name] = self.layout.tail(self.spec.propositions[name])
        return self._tails[name]

    def _names(self, propositions: Optional[Sequence[str]]) -> list[str]:
        names = self.spec.proposition_names if propositions is None else list(propositions)
        unknown = [n for n in names if n not in self.spec.propositions]
        if unknown:
            raise KeyError(f"unknown proposition(s) {unknown}; the spec ({self.spec.source}) has "
                           f"{self.spec.proposition_names}")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"propositions must be non-empty and without repeats, got {names}")
        return names

    def _prefix(self, conversation: Conversation, completion: Completion, i: int) -> tuple[list[int], bool]:
        """Head + transcript ids, the transcript cut from the left so that it fits ``max_length``
        with the spec's longest question (the same cut whichever propositions are asked)."""
        body = self.layout.encode(transcript(conversation, completion, i))
        longest_tail = max(len(self.question_ids(n)) for n in self.spec.propositions)
        room = self.max_length - len(self.layout.head) - longest_tail
        if room < 1:
            raise ValueError(f"max_length={self.max_length} leaves no room for the conversation after the "
                             f"instructions ({len(self.layout.head)} tokens) and the longest question ({longest_tail})")
        cut = len(body) > room
        return self.layout.head + (body[-room:] if cut else body), cut

    def prompt_ids(self, conversation: Conversation, completion: Completion, proposition: str) -> list[int]:
        """The token ids of one full prompt (what the one-prompt-per-question layout feeds the model;
        the answer is read after its last id)."""
        return self._prefix(conversation, completion, 0)[0] + self.question_ids(self._names([proposition])[0])

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
        names = self._names(propositions)
        tails = [self.question_ids(n) for n in names]
        N, P = len(completions), len(names)
        p_yes = torch.empty(N, P, dtype=torch.float32)
        mass = torch.empty(N, P, dtype=torch.float32)
        if N == 0:
            return Grades(p_yes, mass, names)
        prefixes, cut = zip(*(self._prefix(c, r, i) for i, (c, r) in enumerate(zip(conversations, completions))))
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
