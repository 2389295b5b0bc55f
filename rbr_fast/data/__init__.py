"""Data shipped inside the package, so that every command works from a wheel or a bare clone.

- ``rbr_gold/train.jsonl``: the RBR gold set (Mu et al. 2024): 351 conversations with a completion,
  its response type and 23 human-labelled propositions. MIT licence, (c) 2024 OpenAI
  (``rbr_gold/LICENSE``).
- ``xstest/``: XSTest (Röttger et al. 2024): 450 prompts (250 safe, 200 unsafe) and the completions
  of three models (gpt4, llama2orig, mistralinstruct) with human labels. CC-BY-4.0
  (``xstest/LICENSE``).

- ``written/``: rows and prompts written for rbr_fast by its developers (CC0 1.0, ``written/LICENSE``):
  ``rare_train.jsonl`` / ``rare_test.jsonl``, replies labelled for the four rare propositions
  (insults, threats, resources, doses; the test file is for evaluation only), and ``prompts.jsonl``,
  user requests labelled with their response type.

Files are found through ``importlib.resources``. ``$RBR_FAST_DATA`` names another folder with the
same layout (``rbr_gold/train.jsonl``, ``xstest/...``); commands also take ``--data``.

Modules: ``files`` (where the files are), ``readers`` (jsonl rows and XSTest), ``labelled`` (labelled rows
for training and evaluating the grader), ``prompts`` (PPO prompts, held-out split and order),
``comparisons`` (the ranked rows of `rbr-fast fit`, `synth`, `relabel`).
"""
from .files import ENV, gold, root, written_prompts, written_rare, xstest

__all__ = ["ENV", "gold", "root", "written_prompts", "written_rare", "xstest"]
