"""The served grader against a real server: llama-cpp-python's OpenAI-compatible server (built by
``make test``) serving the embedded SmolLM2 GGUF on 127.0.0.1. Its answers agree with the
in-process question path of the same model; a stopped server is a one-line error and a restarted
one is used again; a trainer's reward scores through it."""
import importlib.util
import math

import httpx
import pytest
import torch

from rbr_fast.data.readers import read_jsonl
from rbr_fast import data
from rbr_fast.grading import Grader, embedded
from rbr_fast.grading.served import ServedGraderError

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make test builds it)")
if importlib.util.find_spec(embedded.PACKAGE) is None:
    pytest.skip(f"embedded model not installed ({embedded.INSTALL})", allow_module_level=True)

from llama_server import LlamaServer  # noqa: E402


@pytest.fixture(scope="module")
def server():
    s = LlamaServer(embedded.gguf_path())
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rows():
    return read_jsonl(data.gold(), limit=2)


def test_served_agrees_with_the_in_process_question_path(server, rows):
    convs, comps = [r.conversation for r in rows], [r.completion for r in rows]
    local = Grader.default(dtype="float32", trained=False, progress=False)
    served = Grader.from_server(server.url, concurrency=1, progress=False)  # the embedded tokenizer, from the GGUF name
    # the text sent is tokenised by the server into exactly the ids the in-process path feeds the model
    ids = local.prompt_ids(convs[0], comps[0], "apology")
    [[text]] = served.served_prompts(convs[:1], comps[:1], ["apology"])
    usage = httpx.post(server.url + "/completions", json={"prompt": text, "max_tokens": 1}, timeout=60).json()["usage"]
    assert usage["prompt_tokens"] == len(ids)
    want, got = local.grade(convs, comps), served.grade(convs, comps)
    dp = (want.p_yes - got.p_yes).abs()
    assert float(dp.mean()) <= 0.05 and float(dp.max()) <= 0.2, dp
    assert float((want.mass - got.mass).abs().mean()) <= 0.05
    assert served.client.missing == 0
    pw, pg = local.grade_prompts(convs), served.grade_prompts(convs)
    # 2 x 2 answers whose yes/no mass is ~0.1: llama.cpp's 8-bit activations move them a little more
    assert float((pw.p_yes - pg.p_yes).abs().mean()) <= 0.1


def test_wrong_model_stopped_and_restarted_server(server, rows):
    with pytest.raises(ServedGraderError, match=r"does not serve model 'llama-70b'; it serves \['.*SmolLM2"):
        Grader.from_server(server.url, "llama-70b", tokenizer="embedded")
    g = Grader.from_server(server.url, retries=1, progress=False)
    conv, comp = [rows[0].conversation], [rows[0].completion]
    before = g.grade(conv, comp, ["apology"])
    server.stop()
    try:
        with pytest.raises(ServedGraderError, match=rf"{server.url}/completions unreachable .*after 2 tries") as e:
            g.grade(conv, comp, ["apology"])
        assert "\n" not in str(e.value)
    finally:
        server.start()
    after = g.grade(conv, comp, ["apology"])  # the same grader goes on once the server is back
    torch.testing.assert_close(after.p_yes, before.p_yes, atol=1e-4, rtol=0)


def test_a_trainer_reward_scores_through_the_served_grader(server, rows):
    from rbr_fast.integrations.trl import RBRReward
    reward = RBRReward(model=f"{server.url}#concurrency=1")
    metrics = {}
    out = reward([rows[0].conversation], [rows[0].completion], response_type=[rows[0].response_type],
                 log_metric=metrics.__setitem__)
    assert len(out) == 1 and math.isfinite(out[0])
    assert (metrics["rbr/served_share"], metrics["rbr/zero_shot_share"]) == (1.0, 0.0)  # all asked of the server
    d = reward.details([(rows[0].conversation, rows[0].completion, rows[0].response_type)])[0]
    assert set(d["answered_by"].values()) == {"served"}
