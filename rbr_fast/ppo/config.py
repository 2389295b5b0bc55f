"""PPO configuration: one dataclass, loadable from YAML; each field's help text is its documentation
(``rbr_fast.cli.ppo`` builds the command line from them with transformers' ``HfArgumentParser``)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from ..errors import UserError
from ..io import read_text, yaml_error


def _f(default: Any, doc: str):
    return field(default=default, metadata={"help": doc})


@dataclass
class PPOConfig:
    """Everything a PPO run needs. ``python -m rbr_fast.ppo --help`` lists the fields with their docs."""

    # ---- models
    policy: str = _f("embedded", "policy causal LM: a local transformers folder or hub id, or 'embedded' "
                                 "(SmolLM2-135M-Instruct shipped with the package)")
    critic: str = _f("head", "'head': a linear value head on the policy's last hidden state (one backbone); "
                             "'separate': a value network with its own copy of the policy's backbone")
    reward_model: Optional[str] = _f(None, "optional helpful-only reward model (a sequence classifier folder "
                                           "sharing the policy's tokenizer) whose score is added to the RBR reward")
    rm_coef: float = _f(1.0, "weight of the reward model's score")
    rbr: bool = _f(True, "add the rule-based reward (grader + weights) to the score")
    rbr_coef: float = _f(1.0, "weight of the RBR reward")
    grader: str = _f("embedded", "grader model for the RBR reward (path, hub id, 'embedded' or a served grader's "
                                 "URL, http://HOST:PORT/v1#model=NAME); when it is the policy's own starting model "
                                 "the frozen reference is shared with it")
    grader_url: Optional[str] = _f(None, "a served grader (URL) that answers the propositions the local grader has "
                                         "no trained head for, and those the spec routes to it")
    rbr_weights: str = _f("default", "RBR weights: 'default' (the shipped XSTest-fitted weights for a spec "
                                     "structured as the default one, else hand-set with a warning), 'xstest', "
                                     "'hand' (hand-set) or a weights JSON path")
    spec: Optional[str] = _f(None, "rule spec YAML (default: the shipped safety spec)")
    device: str = _f("auto", "'auto' (CUDA when available), 'cpu' or 'cuda'")
    bf16: str = _f("auto", "bf16 autocast for model forwards: 'auto' (on CUDA and on CPUs with AMX), 'on' or 'off'")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward (less memory, ~30 percent more time)")
    # ---- data
    prompts: str = _f("xstest", "'xstest' (XSTest prompts: safe -> comply, unsafe -> hard_refuse) or a jsonl "
                                "file with 'prompt' (string or chat messages) and optional 'response_type'")
    eval_prompts: int = _f(32, "prompts held out for the before/after evaluation (0: no evaluation)")
    max_prompt_tokens: int = _f(128, "prompts longer than this are cut from the left")
    # ---- rollout
    batch_size: int = _f(8, "prompts per PPO step per process (group_size completions each)")
    group_size: int = _f(1, "completions sampled per prompt. 1: PPO with the critic (GAE). > 1: each completion's "
                            "baseline is the mean score of the other completions of its prompt (RLOO), in place "
                            "of the critic: no value loss, gamma = lam = 1 for the advantages")
    max_new_tokens: int = _f(48, "response length limit")
    min_new_tokens: int = _f(0, "generate at least this many tokens (benchmarks set it to max_new_tokens)")
    temperature: float = _f(0.7, "sampling temperature (log-probs are taken at the same temperature)")
    top_p: float = _f(1.0, "nucleus sampling threshold (1: off)")
    top_k: int = _f(0, "top-k sampling (0: off)")
    missing_eos_penalty: Optional[float] = _f(None, "subtracted from the score of a response that hit the "
                                                    "length limit without EOS")
    # ---- PPO update
    ppo_epochs: int = _f(2, "passes over each rollout batch")
    mini_batch_size: int = _f(4, "rollouts per optimizer step per process")
    grad_accum_steps: int = _f(1, "micro-batches per mini-batch (mini_batch_size must divide evenly)")
    lr: float = _f(3e-6, "AdamW learning rate (policy and value)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: off)")
    clip_range: float = _f(0.2, "policy ratio clip")
    value_clip: float = _f(0.2, "value clip around the rollout's values")
    vf_coef: float = _f(0.1, "value loss weight")
    ent_coef: float = _f(0.0, "entropy bonus weight (0: off; the fused kernel's entropy is differentiable)")
    kl_coef: float = _f(0.05, "per-token KL penalty against the reference")
    kl_estimator: str = _f("k1", "'k1', 'k2' or 'k3' KL estimate in the reward shaping")
    gamma: float = _f(1.0, "discount")
    lam: float = _f(0.95, "GAE lambda")
    whiten_advantages: bool = _f(True, "whiten advantages over the batch (across processes when distributed)")
    # ---- run
    steps: int = _f(20, "PPO steps (rollout + update) to run in total")
    seed: int = _f(0, "seed of prompt order, sampling and initialisation (process r uses seed + r for sampling)")
    out_dir: str = _f("rbr_fast_out/ppo", "logs, checkpoints, plots and the final policy go here")
    save_every: int = _f(10, "checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = _f(1, "checkpoints kept on disk (older ones are deleted after a new one is complete)")
    tensorboard: bool = _f(False, "also write TensorBoard scalars (needs the tensorboard package)")
    save_policy: bool = _f(True, "save the final policy (save_pretrained) to OUT_DIR/policy")
    threads: Optional[int] = _f(None, "torch CPU threads per process (default: torch's choice)")
    progress: bool = _f(True, "tqdm progress bar")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ``UserError`` (a ``ValueError``) naming the field for any value of the wrong type or
        out of range."""
        def bad(name, why):
            raise UserError(f"ppo config: {name}={getattr(self, name)!r}: {why}")
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            optional, base = _unwrap(hints[f.name])
            value = getattr(self, f.name)
            if not (value is None and optional or _is(value, base)):
                bad(f.name, f"must be {_KINDS[base]}" + (" or null" if optional else ""))
        for name in ("batch_size", "group_size", "max_new_tokens", "ppo_epochs", "mini_batch_size", "grad_accum_steps",
                     "steps", "max_prompt_tokens", "keep_checkpoints"):
            if getattr(self, name) < 1:
                bad(name, "must be an integer >= 1")
        if self.threads is not None and self.threads < 1:
            bad("threads", "must be an integer >= 1 (or null: torch's choice)")
        for name in ("eval_prompts", "save_every", "min_new_tokens", "top_k"):
            if getattr(self, name) < 0:
                bad(name, "must be an integer >= 0")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("weight_decay", "max_grad_norm", "clip_range", "value_clip", "vf_coef", "ent_coef", "kl_coef",
                     "rm_coef", "rbr_coef"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        for name in ("gamma", "lam", "top_p"):
            if not 0 <= getattr(self, name) <= 1:
                bad(name, "must be in [0, 1]")
        if (self.batch_size * self.group_size) % self.mini_batch_size:
            bad("mini_batch_size", f"must divide the completions per step, batch_size x group_size = "
                                   f"{self.batch_size * self.group_size}")
        if self.mini_batch_size % self.grad_accum_steps:
            bad("grad_accum_steps", f"must divide mini_batch_size={self.mini_batch_size}")
        if self.min_new_tokens > self.max_new_tokens:
            bad("min_new_tokens", f"must be <= max_new_tokens={self.max_new_tokens}")
        choices = {"critic": ("head", "separate"), "kl_estimator": ("k1", "k2", "k3"), "bf16": ("auto", "on", "off"),
                   "device": ("auto", "cpu", "cuda")}
        for name, ok in choices.items():
            if getattr(self, name) not in ok:
                bad(name, f"must be one of {', '.join(ok)}")

    # --------------------------------------------------------------------------------- loading
    @classmethod
    def from_yaml(cls, path: Union[str, Path], **overrides) -> "PPOConfig":
        """Fields from a YAML mapping (``read_yaml``), then ``overrides``."""
        return cls(**{**cls.read_yaml(path), **overrides})

    @classmethod
    def read_yaml(cls, path: Union[str, Path]) -> dict:
        """The fields of a YAML mapping, not yet validated; unknown keys and YAML errors raise
        ``UserError`` naming the file (and line)."""
        path = Path(path)
        try:
            doc = yaml.safe_load(read_text(path)) or {}
        except yaml.YAMLError as e:
            raise UserError(yaml_error(e, path)) from None
        if not isinstance(doc, dict):
            raise UserError(f"{path}: a PPO config is a YAML mapping of field: value")
        unknown = sorted(str(k) for k in set(doc) - set(get_type_hints(cls)))
        if unknown:
            raise UserError(f"{path}: unknown field(s) {', '.join(unknown)} (see `python -m rbr_fast.ppo --help`)")
        return cls.yaml_values(doc)

    @classmethod
    def yaml_values(cls, doc: dict) -> dict:
        """Known fields as YAML read them, not yet validated. YAML 1.1 reads 1e-5 (no dot) as a string:
        a float field takes it as the number it spells."""
        hints = get_type_hints(cls)
        return {k: _yaml_float(v) if _unwrap(hints[k])[1] is float else v for k, v in doc.items()}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_KINDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _unwrap(tp) -> tuple[bool, type]:
    """(optional, base type) of a field's annotation: ``Optional[X]`` -> (True, X)."""
    optional = get_origin(tp) is Union and type(None) in get_args(tp)
    return optional, next(a for a in get_args(tp) if a is not type(None)) if optional else tp


def _is(value: Any, base: type) -> bool:
    """Whether ``value`` is a ``base`` field's value (bools are not numbers here; ints are floats)."""
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, base) and (base is bool or not isinstance(value, bool))


def _yaml_float(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value
