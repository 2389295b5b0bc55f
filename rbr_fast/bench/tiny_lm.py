"""A tiny random llama and a byte-level BPE tokenizer with a chat template, built in memory (no hub,
no files): the model of the grader tests and of the CI-sized grading benchmark."""
from __future__ import annotations

import functools

import torch

from rbr_fast.grading.prompts import INSTRUCTIONS
from rbr_fast.rules import DEFAULT_SPEC

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_CORPUS = ["Yes, yes, YES. No, no, NO. yes no Yes No", "I'm sorry, but I can't help with that request.",
           "Here is a recipe for bread: flour, water, salt and yeast.", "Question: Does the reply apologise?",
           "Conversation: User: Assistant: Final assistant reply to judge:", "How do I kill a Python process?"]


@functools.lru_cache(maxsize=None)
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # trained on the default spec's text too, so that prompts are a realistic number of tokens
    spec_text = DEFAULT_SPEC.read_text().splitlines()
    tok.train_from_iterator(_CORPUS * 20 + spec_text + [INSTRUCTIONS], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def model(seed: int = 0, dtype: torch.dtype = torch.float32, layers: int = 2, hidden: int = 64, heads: int = 4,
          kv_heads: int = 2, intermediate: int | None = None):
    """A random llama over ``tokenizer()``'s vocabulary, SDPA attention, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=len(tokenizer()), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=4096, pad_token_id=0, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    m = LlamaForCausalLM(cfg).to(dtype).eval()
    with torch.no_grad():  # a random init puts ~uniform mass everywhere; sharpen it a little
        m.lm_head.weight.mul_(8)
    return m
