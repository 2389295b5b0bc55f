"""The OpenRLHF adapter, loaded and called the way OpenRLHF 0.11 does (OpenRLHF itself is not
installed here: it pulls Ray, vLLM and DeepSpeed, so its loading and calling are reproduced).

OpenRLHF's ``SingleTurnAgentExecutor`` loads the ``--reward.remote_url`` file with
``spec_from_file_location("reward_func", path)`` and calls ``reward_func(queries, prompts,
labels)`` positionally with one sample per call, from many threads (``asyncio.to_thread``). The
query is the chat-templated prompt plus the response, decoded with special tokens kept.
"""
import copy
import importlib.util
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import rbr_fast.integrations
from rbr_fast.bench import tiny_lm
from rbr_fast.integrations import pool as pool_module
from rbr_fast.integrations.chat_parse import Template, split_query
from rbr_fast.integrations.items import p_ideal

OPENRLHF_FILE = str(Path(rbr_fast.integrations.__file__).parent / "openrlhf.py")


def load_like_openrlhf(path: str = OPENRLHF_FILE):
    spec = importlib.util.spec_from_file_location("reward_func", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_func


@pytest.fixture
def env(tiny_grader_dir, monkeypatch):
    """OpenRLHF passes no options: the adapter reads RBR_FAST_* from the environment."""
    values = {"RBR_FAST_MODEL": tiny_grader_dir, "RBR_FAST_DTYPE": "float32", "RBR_FAST_DEVICE": "cpu",
              "RBR_FAST_MAX_WAIT_MS": "200", "RBR_FAST_POLICY_TOKENIZER": tiny_grader_dir}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


LABELS = ["Hard Refuse", "comply", "", "gold answer", "safe_refuse_2", None]


def query_rows(n: int) -> list[tuple]:
    """(query, prompt, label, messages, reply) of ``n`` samples as OpenRLHF hands them over."""
    tok = tiny_lm.tokenizer()
    rows = []
    for i in range(n):
        messages = [{"role": "user", "content": f"How do I do thing {i % 6}?"}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        reply = f"Here is answer {i}." if i % 2 else "I can't help with that."
        ids = tok(prompt + reply + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((tok.decode(ids, skip_special_tokens=False), prompt, LABELS[i % len(LABELS)], messages, reply))
    return rows


def test_one_sample_calls_from_many_threads(env):
    reward_func = load_like_openrlhf()
    rows = query_rows(48)
    with ThreadPoolExecutor(48) as ex:
        outs = list(ex.map(lambda r: reward_func([r[0]], [r[1]], [r[2]]), rows))
    reward = pool_module.pooled().reward.reward
    named = {"Hard Refuse": "hard_refuse", "comply": "comply", "safe_refuse_2": "safe_refuse_2"}
    types = [named.get(r[2]) for r in rows]
    alone = [reward.details([r[3]], [r[4]], [t])[0] for r, t in zip(rows, types)]  # what the grader should read
    assert all(o["rewards"].shape == (1,) and o["scores"].shape == (1,) for o in outs)
    assert [float(o["rewards"][0]) for o in outs] == pytest.approx([d["reward"] for d in alone], abs=1e-5)
    assert [float(o["scores"][0]) for o in outs] == pytest.approx([p_ideal(d) for d in alone], abs=1e-5)
    assert all(0 <= float(o["scores"][0]) <= 1 for o in outs)
    assert isinstance(outs[0]["extra_logs"]["rbr/apology"], torch.Tensor)
    assert max(pool_module.pooled().batcher.sizes) > 1  # the one-sample calls shared grader batches


def test_errors_log_one_line(env, caplog):
    reward_func = load_like_openrlhf()
    with caplog.at_level(logging.ERROR, logger="rbr_fast.openrlhf"), pytest.raises(Exception, match="prompts has 2"):
        reward_func(["q"], ["p", "extra"], [""])
    assert [r.levelno for r in caplog.records] == [logging.ERROR] and "rbr_fast OpenRLHF reward" in caplog.text


LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
         "{{ raise_exception('System role not supported') }}{% endif %}"
         "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
         "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
FAMILIES = {  # template, special tokens, end of the generated reply
    "chatml": (tiny_lm.CHAT_TEMPLATE, {}, "<|im_end|><pad><pad>"),
    "llama3": (LLAMA3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                        "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"]},
               "<|eot_id|><|end_of_text|>"),
    "gemma": (GEMMA, {"bos_token": "<bos>", "eos_token": "<eos>",
                      "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}, "<end_of_turn>\n<eos>"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_query_back_into_messages_per_template_family(family):
    template, special, end = FAMILIES[family]
    tok = copy.deepcopy(tiny_lm.tokenizer())
    tok.add_special_tokens(special)
    tok.chat_template = template
    messages = ([] if family == "gemma" else [{"role": "system", "content": "Be brief."}]) + [
        {"role": "user", "content": "Hi there."}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How do I pick a lock?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    query = prompt + "I can't help with that." + end
    learnt = Template.from_tokenizer(tok)
    for how in (None, learnt):  # markers recognised in the text; markers learnt from the policy tokenizer
        assert split_query(query, prompt, how) == (messages, "I can't help with that.")
    # a left-truncated prompt that is no longer a prefix of the query: the reply is still found
    conv, reply = split_query(query[8:], prompt[3:], learnt)
    assert reply == "I can't help with that." and conv[-1] == messages[-1]


def test_plain_text_prompts():
    assert split_query("Q: hi? A: hello<|im_end|>", "Q: hi?") == ("Q: hi?", "A: hello")
    assert split_query("no prompt given", "") == ("", "no prompt given")


def test_reasoning_is_stripped_unless_kept(env, monkeypatch):
    reward_func = load_like_openrlhf()
    tok = tiny_lm.tokenizer()
    prompt = tok.apply_chat_template([{"role": "user", "content": "Bake bread?"}], tokenize=False,
                                     add_generation_prompt=True)
    think = "<think>" + "The user asks about baking; that is safe, so I answer. " * 30 + "</think>\n\n"
    plain, stripped = (float(reward_func([prompt + r + "<|im_end|>"], [prompt], ["comply"])["rewards"][0])
                       for r in ("Mix flour and water.", think + "Mix flour and water."))
    monkeypatch.setenv("RBR_FAST_REASONING", "keep")
    kept = float(reward_func([prompt + think + "Mix flour and water.<|im_end|>"], [prompt], ["comply"])["rewards"][0])
    assert stripped == pytest.approx(plain, abs=1e-5) and abs(kept - plain) > 1e-3


# a chat template outside the built-in families (Phi-3's): only the policy tokenizer says where turns end
PHI3 = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_server_mode_reads_queries_as_file_mode(env, tmp_path, monkeypatch):
    """OpenRLHF's ``--reward.remote_url`` as a file and as an ``rbr-fast serve`` URL: the same query
    gives the same reward, the chat-template markers read off by the same function
    (``protocol.get_reward_items``) in both."""
    import httpx
    from live_server import Server
    from rbr_fast.integrations import protocol
    tok = copy.deepcopy(tiny_lm.tokenizer())
    tok.add_special_tokens({"eos_token": "<|endoftext|>",
                            "additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]})
    tok.chat_template = PHI3
    tok.save_pretrained(tmp_path / "policy")
    monkeypatch.setenv("RBR_FAST_POLICY_TOKENIZER", str(tmp_path / "policy"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I pick a lock?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    reply = "I can't help with that."
    query = prompt + reply + "<|end|>\n<|endoftext|>"
    reward_func = load_like_openrlhf()
    file_mode = reward_func([query], [prompt], ["hard_refuse"])
    lazy = pool_module.pooled().reward  # the same grader behind the server
    spec = lazy.reward.spec
    body = {"query": [query], "prompts": [prompt], "labels": ["hard_refuse"]}
    assert protocol.get_reward_items(spec, body, str(tmp_path / "policy")) == [(messages, reply, "hard_refuse")]
    assert protocol.get_reward_items(spec, body)[0][1] != reply  # markers kept without the policy tokenizer
    server = Server(lazy, policy_tokenizer=str(tmp_path / "policy"))
    try:
        served = httpx.post(server.url + "/get_reward", json=body, timeout=60).json()
    finally:
        server.stop()
    alone = lazy.reward.details([messages], [reply], ["hard_refuse"])[0]
    assert float(file_mode["rewards"][0]) == pytest.approx(alone["reward"], abs=1e-5)
    assert served["rewards"] == pytest.approx([float(file_mode["rewards"][0])], abs=1e-5)
    assert served["scores"] == pytest.approx([float(file_mode["scores"][0])], abs=1e-5)
    assert served["extra_logs"].keys() == file_mode["extra_logs"].keys()


def test_serve_checks_the_policy_tokenizer_first(capsys):
    from rbr_fast.cli import main
    assert main(["serve", "--policy-tokenizer", "/no/such/tokenizer/"]) == 2
    assert capsys.readouterr().err.strip() == ("rbr-fast serve: error: --policy-tokenizer /no/such/tokenizer/: "
                                               "no such model folder")


def _engine_actor(rows: list) -> tuple:
    """One of OpenRLHF's vLLM engine actors: its own process, the file loaded by path, one-sample calls
    from many threads; and how many graders it loaded itself."""
    reward_func = load_like_openrlhf()
    with ThreadPoolExecutor(8) as ex:
        outs = list(ex.map(lambda r: reward_func([r[0]], [r[1]], [r[2]]), rows))
    return [float(o["rewards"][0]) for o in outs], pool_module.loaded()


def test_local_server_gives_engine_actors_one_grader_per_node(env, monkeypatch):
    """RBR_FAST_LOCAL_SERVER=1: the engine actors start one `rbr-fast serve` on the node (the first under a
    lock, the others find it), score through its /get_reward and load no grader themselves."""
    pytest.importorskip("fastapi")
    import json
    import multiprocessing
    import os
    import signal
    from concurrent.futures import ProcessPoolExecutor
    from rbr_fast.integrations import node_graders
    rows = [r[:3] for r in query_rows(8)]
    monkeypatch.setenv("RBR_FAST_LOCAL_SERVER", "1")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        got = [f.result(timeout=300) for f in [ex.submit(_engine_actor, rows[i::2]) for i in range(2)]]
    records = list(node_graders.folder().glob("serve-*.json"))
    assert len(records) == 1 and [g[1] for g in got] == [0, 0]
    pid = json.loads(records[0].read_text())["pid"]
    try:
        monkeypatch.delenv("RBR_FAST_LOCAL_SERVER")
        reward_func = load_like_openrlhf()
        want = [float(reward_func([r[0]], [r[1]], [r[2]])["rewards"][0]) for r in rows]  # in this process
        assert got[0][0] + got[1][0] == pytest.approx(want[0::2] + want[1::2], abs=1e-5)
    finally:
        os.kill(pid, signal.SIGTERM)
