"""The TRL adapter, driven the way TRL 1.16 drives it: keyword calls with ``log_metric`` /
``log_extra``, the async forms pickled into a spawned process as TRL's async GRPO worker does, and
a real GRPOTrainer run that is handed the ``RBRReward`` object itself."""
import asyncio
import math
import os
import importlib.util
import inspect
import multiprocessing
import pickle
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from rbr_fast.bench import tiny_lm
from rbr_fast.grading import Grader
from rbr_fast.grading.prompts import transcript
from rbr_fast.integrations.trl import RBRReward, RBRServerReward, async_reward_func, rbr_reward_async
from rbr_fast.reward import RewardWeights, RuleBasedReward
from rbr_fast.rules import RuleSpec

HAS_TRL = importlib.util.find_spec("trl") is not None


@pytest.fixture(scope="module")
def func():
    return RBRReward(RuleBasedReward(Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False)))


PROMPTS = [[{"role": "user", "content": "How do I make a bomb?"}], [{"role": "user", "content": "Bake bread?"}],
           [{"role": "user", "content": "Bake bread?"}]]
COMPLETIONS = [[{"role": "assistant", "content": "I can't help with that."}],
               [{"role": "assistant", "content": "Mix flour and water."}], [{"role": "assistant", "content": "No."}]]


def test_call_like_trl_with_metrics_and_table_columns(func):
    metrics, extra = defaultdict(list), {}
    out = func(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=[[1], [2], [3]],
               response_type=["hard_refuse", "comply", None], trainer_state=None,
               log_extra=lambda col, values: extra.__setitem__(col, values),
               log_metric=lambda name, value: metrics[name].append(value))
    d = func.reward.details(PROMPTS, COMPLETIONS, ["hard_refuse", "comply", None])
    assert out == pytest.approx([x["reward"] for x in d])
    spec = func.reward.spec
    assert {f"rbr/{p}" for p in spec.propositions} <= set(metrics)
    assert {f"rbr/{t}/share" for t in spec.response_type_names} <= set(metrics)
    assert metrics["rbr/hard_refuse/reward"] == pytest.approx([d[0]["reward"]])
    assert extra["rbr_response_type"] == [x["response_type"] for x in d]
    assert extra["rbr_class"][0] == max(d[0]["classes"], key=d[0]["classes"].get)
    plain = func(prompts=["a", "b"], completions=["x", "y"])  # strings, no type column: inferred
    assert len(plain) == 2 and func.__name__ == "rbr"


def test_tool_calls_and_multimodal_content_reach_the_grader(func, monkeypatch):
    """TRL's conversational shapes: a tool-calling completion (tool_calls with dict arguments, empty
    content, a tool message, the final answer) and a multimodal prompt (list-of-parts content)."""
    seen = []
    grade = func.reward.grader.grade
    monkeypatch.setattr(func.reward.grader, "grade",
                        lambda convs, comps, *a: seen.extend(zip(convs, comps)) or grade(convs, comps, *a))
    prompt = [{"role": "user", "content": [{"type": "image", "image": object()},
                                          {"type": "text", "text": "What is in this picture?"}]}]
    completion = [{"role": "assistant", "content": "", "tool_calls": [
                      {"type": "function", "function": {"name": "describe", "arguments": {"detail": "high"}}}]},
                  {"role": "tool", "name": "describe", "content": "a cat"},
                  {"role": "assistant", "content": "A cat.", "reasoning_content": "the tool says so"}]
    out = func(prompts=[prompt], completions=[completion], response_type=["comply"])
    text = transcript(*seen[-1])
    assert '[image]\nWhat is in this picture?' in text
    assert '[tool call] describe({"detail": "high"})' in text and "Tool: a cat" in text and "A cat." in text
    assert out == pytest.approx(func.reward.score([prompt], [completion], ["comply"]))


def test_weights_by_name_and_grader_options_reach_transformers(monkeypatch, tmp_path):
    spec = RuleSpec.default()
    assert torch.equal(RBRReward(weights="xstest").weights.weights, RewardWeights.named("xstest", spec).weights)
    # the drop-in default for the default spec: the weights fitted on XSTest
    assert torch.equal(RBRReward().weights.weights, RewardWeights.named("xstest", spec).weights)
    assert torch.equal(RBRReward(weights="hand").weights.weights, RewardWeights.hand_set(spec).weights)
    other = RewardWeights.hand_set(spec)
    other.spec_structure = "another spec"
    other.save(tmp_path / "w.json")
    with pytest.raises(ValueError, match="other propositions or classes"):  # refused where given, not mid-training
        RBRReward(weights=str(tmp_path / "w.json"))
    import transformers
    calls = {}

    def fake(what, obj):
        def load(path, **kw):
            calls[what] = (path, kw)
            return obj
        return load
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake("tokenizer", tiny_lm.tokenizer()))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake("model", tiny_lm.model()))
    r = RBRReward(model="org/grader", revision="abc123", token="hf_secret", dtype="float32", device="cpu",
                  token_budget=4096)
    assert r.reward.grader.token_budget == 4096
    assert calls["model"] == ("org/grader", {"dtype": torch.float32, "attn_implementation": "sdpa",
                                             "revision": "abc123", "token": "hf_secret"})
    assert calls["tokenizer"] == ("org/grader", {"revision": "abc123", "token": "hf_secret"})
    with pytest.raises(ValueError, match="revision need a model"):
        RBRReward(revision="abc").reward


def test_async_forms_are_picklable_and_seen_as_async(func, tiny_grader_dir):
    lazy = RBRReward(model="/nowhere", weights="hand")
    back = pickle.loads(pickle.dumps(lazy))
    assert back.model == "/nowhere"  # the recipe, not the model: it loads where it is first used
    with pytest.raises((OSError, ValueError), match="/nowhere"):  # loading it is what fails
        back.reward
    # once loaded, it still pickles as its recipe (no weights go along) and scores the same elsewhere
    loaded = RBRReward(model=tiny_grader_dir, weights="hand", dtype="float32", device="cpu")
    want = loaded(prompts=["a"], completions=["b"], response_type=["comply"])
    blob = pickle.dumps(loaded)
    assert len(blob) < 100_000 < sum(p.numel() * 4 for p in loaded.reward.grader.model.parameters())
    assert pickle.loads(blob)(prompts=["a"], completions=["b"], response_type=["comply"]) == pytest.approx(want)
    forms = [rbr_reward_async, async_reward_func(func), RBRServerReward("http://127.0.0.1:9", token="t")]
    for f in forms:
        g = pickle.loads(pickle.dumps(f))
        assert inspect.iscoroutinefunction(g) and g.__name__ in ("rbr_reward_async", "rbr_server")
    if HAS_TRL:  # TRL 1.16's own checks
        from trl.trainer.utils import get_callable_name, is_async_callable
        assert all(is_async_callable(f) for f in forms) and not is_async_callable(func)
        assert [get_callable_name(f) for f in forms + [func]] == ["rbr_reward_async", "rbr_reward_async",
                                                                  "rbr_server", "rbr"]
    got = asyncio.run(forms[1](prompts=["a"], completions=["b"], response_type=["comply"]))
    assert got == pytest.approx(func(prompts=["a"], completions=["b"], response_type=["comply"]))


def _rollout_child(blob: bytes, prompts: list, completions: list, types: list) -> list:
    """What TRL's async GRPO worker does in its spawned child: unpickle the reward functions and
    score a group with them concurrently (awaited when async, else in a thread)."""
    funcs = pickle.loads(blob)
    from trl.trainer.utils import is_async_callable

    async def score():
        kw = dict(completions=completions, prompts=prompts, completion_ids=[[0]] * len(prompts), response_type=types)
        return await asyncio.gather(*[f(**kw) if is_async_callable(f) else asyncio.to_thread(f, **kw) for f in funcs])
    return asyncio.run(score())


@pytest.mark.skipif(not HAS_TRL or importlib.util.find_spec("fastapi") is None, reason="needs trl and fastapi")
def test_async_grpo_worker_pickles_and_runs_them_in_a_spawned_process(func):
    from live_server import Server
    server = Server(func, token="t0k")
    try:
        funcs = [async_reward_func(func), RBRServerReward(server.url, token="t0k"), func]
        blob = pickle.dumps(funcs)  # AsyncRolloutWorker.start() does exactly this check
        types = ["hard_refuse", "comply", None]
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
            columns = ex.submit(_rollout_child, blob, PROMPTS, COMPLETIONS, types).result(timeout=300)
    finally:
        server.stop()
    want = func.reward.score(PROMPTS, COMPLETIONS, types)
    for col in columns:
        assert col == pytest.approx(want, abs=1e-5)


def _trl_process(blob: bytes, prompts: list, completions: list, types: list) -> tuple:
    """One of TRL's processes (one per GPU under accelerate): its reward functions, called as TRL awaits
    an async one; and how many graders the process loaded itself."""
    from rbr_fast.integrations import pool
    func = pickle.loads(blob)
    out = asyncio.run(func(prompts=prompts, completions=completions, completion_ids=[[0]] * len(prompts),
                           response_type=types))
    return out, pool.loaded()


@pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="needs fastapi")
def test_local_server_reward_gives_trl_processes_one_grader_per_node(tiny_grader_dir):
    """RBRServerReward("local", **options): TRL's processes start one `rbr-fast serve` on the node (the
    first under a lock, the others find it), score through it and load no grader themselves."""
    import json
    import signal
    from rbr_fast.integrations import node_graders
    opts = {"model": tiny_grader_dir, "dtype": "float32", "device": "cpu", "max_wait_ms": 50}
    blob = pickle.dumps(RBRServerReward("local", **opts))
    types = ["hard_refuse", "comply", None]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        got = [f.result(timeout=300) for f in [ex.submit(_trl_process, blob, PROMPTS, COMPLETIONS, types)
                                               for _ in range(2)]]
    records = list(node_graders.folder().glob("serve-*.json"))
    assert len(records) == 1 and [g[1] for g in got] == [0, 0]
    pid = json.loads(records[0].read_text())["pid"]
    try:
        direct = RBRReward(**{k: v for k, v in opts.items() if k != "max_wait_ms"})  # a batching option
        want = direct(PROMPTS, COMPLETIONS, response_type=types)
        for rewards, _ in got:
            assert rewards == pytest.approx(want, abs=1e-5)
    finally:
        os.kill(pid, signal.SIGTERM)


def test_local_server_reward_options_are_checked():
    with pytest.raises(TypeError, match="apply only with url='local'"):
        RBRServerReward("http://127.0.0.1:9", model="x")
    with pytest.raises(TypeError, match="own token"):
        RBRServerReward("local", token="t")
    with pytest.raises(TypeError, match=r"unknown rbr_fast reward option\(s\) \['modle'\]"):
        RBRServerReward("local", modle="x")
    # values too, before any server starts (it would fail only in its log, at the first reward call)
    for bad, message in (({"reasoning": "maybe"}, "reasoning must be 'strip'"),
                         ({"max_batch": 0}, "max_batch=0: must be an integer >= 1"),
                         ({"max_batch": 2.5}, "max_batch=2.5: must be an integer >= 1"),
                         ({"max_wait_ms": float("inf")}, "max_wait_ms=inf: must be a number >= 0"),
                         ({"max_wait_ms": "x"}, "max_wait_ms='x': must be a number >= 0"),
                         ({"weights": "/no/such.json"}, "/no/such.json: cannot read the weights"),
                         ({"spec": "/no/spec.yaml"}, "/no/spec.yaml: cannot read the spec")):
        with pytest.raises(ValueError, match=message):
            RBRServerReward("local", **bad)


@pytest.mark.skipif(not HAS_TRL, reason="trl is not installed (pip install trl)")
def test_grpo_trainer_takes_the_reward_object(func, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": p}], "response_type": t}
                            for p, t in [("How do I make a bomb?", "hard_refuse"), ("Bake bread?", "comply")] * 4])
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
                      save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=tiny_lm.model(), reward_funcs=[func], args=args, train_dataset=ds,
                          processing_class=tiny_lm.tokenizer())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "rewards/rbr/mean" in h]
    assert logs and all("rbr/apology" in h and "rbr/comply/share" in h for h in logs)
    assert torch.isfinite(torch.tensor([h["loss"] for h in trainer.state.log_history if "loss" in h])).all()


REASONING_ITEMS = [("How do I make a bomb?", "I can't help with that.", "hard_refuse"),
                   ("Bake bread?", "Mix flour, water and yeast, then bake.", "comply"),
                   ("How do I pick a lock?", "I won't help, but a locksmith can.", "safe_refuse_1"),
                   ("What is 2+2?", "4.", None)]
LONG = "Let me think step by step about what the user asks and whether it is safe. " * 40


@pytest.mark.parametrize("wrap", [
    lambda a: f"<think>{LONG}</think>\n\n{a}",
    lambda a: f"<reasoning>{LONG}</reasoning>{a}",
    lambda a: f"{LONG}</think>\n{a}",  # the chat template opened the block in the prompt (DeepSeek-R1, Qwen3)
    lambda a: [{"role": "assistant", "content": f"<think>{LONG}</think>{a}", "reasoning_content": LONG}],
    lambda a: [{"role": "assistant", "content": [{"type": "thinking", "thinking": LONG}, {"type": "text", "text": a}]}],
], ids=["think", "reasoning", "close-only", "message", "thinking-part"])
def test_reasoning_is_set_aside_by_default_and_kept_on_request(wrap):
    reward = RuleBasedReward(Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False))
    strip, keep = RBRReward(reward), RBRReward(reward, reasoning="keep")
    prompts, answers, types = map(list, zip(*REASONING_ITEMS))
    as_answers = [a if isinstance(wrap(a), str) else [{"role": "assistant", "content": a}] for a in answers]
    want = strip(prompts=prompts, completions=as_answers, response_type=types)
    got = strip(prompts=prompts, completions=[wrap(a) for a in answers], response_type=types)
    assert got == pytest.approx(want, abs=1e-5)  # exactly the answer's reward (the target is 0.05)
    kept = keep(prompts=prompts, completions=[wrap(a) for a in answers], response_type=types)
    assert max(abs(k - w) for k, w in zip(kept, want)) > 1e-3  # "keep": the grader reads the reasoning too


def test_unclosed_reasoning_grades_an_empty_answer_and_tool_calls_stay():
    from rbr_fast.integrations.items import answer_only
    reward = RBRReward(RuleBasedReward(Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False)))
    cut_off = reward(prompts=["Bake bread?"], completions=[f"<think>{LONG}"], response_type=["comply"])
    assert cut_off == pytest.approx(reward(prompts=["Bake bread?"], completions=[""], response_type=["comply"]))
    call = [{"role": "assistant", "content": "<think>look it up</think>", "tool_calls": [
                {"type": "function", "function": {"name": "search", "arguments": "{}"}}]},
            {"role": "tool", "content": "<think>tool text is not the model's reasoning</think>"},
            {"role": "assistant", "content": "<think>ok</think>Found it."}]
    assert answer_only(call) == [{**call[0], "content": ""}, call[1], {**call[2], "content": "Found it."}]
    assert answer_only("no reasoning here") == "no reasoning here"
    assert answer_only("Quoting a tag: <think>x</think> is not leading.") == "Quoting a tag: <think>x</think> is not leading."
    with pytest.raises(ValueError, match="reasoning must be 'strip'"):
        RBRReward(reasoning="drop")


def test_metric_names_are_the_same_for_batches_of_different_types(func):
    names = []
    for rtype in ("comply", "hard_refuse"):
        metrics = {}
        func(prompts=["Bake bread?", "Make a bomb?"], completions=["Sure.", "No."], response_type=[rtype] * 2,
             log_metric=metrics.__setitem__)
        names.append(set(metrics))
        assert metrics[f"rbr/{rtype}/share"] == 1.0 and not math.isnan(metrics[f"rbr/{rtype}/reward"])
        other = "hard_refuse" if rtype == "comply" else "comply"
        assert metrics[f"rbr/{other}/share"] == 0.0 and math.isnan(metrics[f"rbr/{other}/reward"])
    assert names[0] == names[1]
    assert {f"rbr/{t}/{m}" for t in func.spec.response_type_names for m in ("share", "reward")} <= names[0]


REASON = "Let me think step by step about what the user asks and whether it is safe to answer. " * 6
QUESTIONS = {"How do I make a bomb?": "hard_refuse", "Bake bread?": "comply"}
ANSWERS = ["I can't help with that.", "Mix flour, water and yeast, then bake."]


@pytest.mark.skipif(not HAS_TRL, reason="trl is not installed (pip install trl)")
def test_grpo_trainer_on_reasoning_completions_grades_the_answers(func, tmp_path):
    """A real TRL 1.16 GRPOTrainer whose policy answers as a reasoning model does,
    "<think>REASONING</think>\\n\\nANSWER<|im_end|>": the rewards TRL logs are those of the answers
    alone. A tiny random policy never writes a <think> block, so its ``generate`` is replaced by
    one that returns scripted completion tokens after the prompt; everything else (EOS masking,
    decoding into assistant messages, the reward call, logging, the loss) is TRL's own."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    tok, policy = tiny_lm.tokenizer(), tiny_lm.model()
    calls = []  # per generate call: (question, answer) of each row, in batch order

    def reasoning_generate(input_ids, attention_mask=None, **kwargs):
        rows, seen = [], []
        for i, ids in enumerate(input_ids):
            question = next(q for q in QUESTIONS if q in tok.decode(ids, skip_special_tokens=True))
            seen.append((question, ANSWERS[i % 2]))  # the two generations of a prompt differ
            text = f"<think>{REASON}</think>\n\n{ANSWERS[i % 2]}"
            rows.append(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        calls.append(seen)
        width = max(map(len, rows))
        completion = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], device=input_ids.device)
        return torch.cat([input_ids, completion], dim=1)
    policy.generate = reasoning_generate

    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "response_type": t}
                            for q, t in QUESTIONS.items()] * 4)
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
                      save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=policy, reward_funcs=[func], args=args, train_dataset=ds, processing_class=tok)
    trainer.train()

    def answers_only(seen):  # RBRReward on the answers without the reasoning
        return func(prompts=[[{"role": "user", "content": q}] for q, _ in seen],
                    completions=[[{"role": "assistant", "content": a}] for _, a in seen],
                    response_type=[QUESTIONS[q] for q, _ in seen])
    logs = [h for h in trainer.state.log_history if "rewards/rbr/mean" in h]
    assert len(logs) == len(calls) == 2
    for h, seen in zip(logs, calls):
        assert h["rewards/rbr/mean"] == pytest.approx(sum(answers_only(seen)) / len(seen), abs=1e-4)
    # the last batch, as TRL logged it: the reward function was handed the reasoning, and graded the answers
    completions = [c[0]["content"] for c in trainer._logs["completion"]]
    assert completions == [f"<think>{REASON}</think>\n\n{a}" for _, a in calls[-1]]
    assert list(trainer._logs["rewards"]["rbr"]) == pytest.approx(answers_only(calls[-1]), abs=1e-4)
    keep = RBRReward(func.reward, reasoning="keep")
    kept = keep(prompts=list(trainer._logs["prompt"]), completions=list(trainer._logs["completion"]),
                response_type=[QUESTIONS[q] for q, _ in calls[-1]])
    assert max(abs(k - w) for k, w in zip(kept, trainer._logs["rewards"]["rbr"])) > 1e-3  # the reasoning mattered
