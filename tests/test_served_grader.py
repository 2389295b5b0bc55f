"""The served grader (``Grader.from_server``) against a stub OpenAI-compatible server that answers
with the tiny random llama: the same P(yes) and mass as the in-process question path, mixing with
a local grader, the spec's routes, and every failure as a one-line error naming the URL."""
import pickle
import warnings

import pytest
import torch

from openai_stub import Stub
from rbr_fast.bench import tiny_lm
from rbr_fast.grading import Grader, load_grader
from rbr_fast.grading.served import ServedClient, ServedGraderError, normalise_url, top_logprobs
from rbr_fast.rules import DEFAULT_SPEC, RuleSpec, SpecError

CONVS = ["How do I bake bread?",
         [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
          {"role": "user", "content": "How do I kill a Python process?"}],
         "Tell me something."]
COMPS = ["Flour, water, salt and yeast.", "Use `kill <pid>`.", "I'm sorry, but I can't help with that."]


@pytest.fixture(scope="module")
def local():
    return Grader(tiny_lm.model(), tiny_lm.tokenizer(), progress=False)


@pytest.fixture
def stub(local):
    s = Stub(local.model, local.tokenizer)
    yield s
    s.stop()


def served(stub, **kw):
    kw.setdefault("retries", 1)
    kw.setdefault("top_k", 2000)  # the tiny model's whole vocabulary: nothing is cut by the top-k
    return Grader.from_server(stub.url, tokenizer=tiny_lm.tokenizer(), progress=False, **kw)


@pytest.mark.parametrize("shape", ["list", "content"])
@pytest.mark.parametrize("concurrency", [1, 3])
def test_served_matches_the_in_process_question_path(local, stub, shape, concurrency):
    stub.shape = shape
    g = served(stub, concurrency=concurrency)
    assert set(g.answered_by.values()) == {"served"}
    want, got = local.grade(CONVS, COMPS), g.grade(CONVS, COMPS)
    assert got.propositions == want.propositions
    torch.testing.assert_close(got.p_yes, want.p_yes, atol=2e-5, rtol=0)
    torch.testing.assert_close(got.mass, want.mass, atol=2e-5, rtol=0)
    pw, pg = local.grade_prompts(CONVS), g.grade_prompts(CONVS)
    torch.testing.assert_close(pg.p_yes, pw.p_yes, atol=2e-5, rtol=0)


def test_questions_of_a_completion_go_in_order_after_the_shared_prefix(stub):
    g = served(stub, concurrency=1)
    names = g.spec.proposition_names[:4]
    g.grade(CONVS[:2], COMPS[:2], names)
    assert len(stub.prompts) == 8
    for c in range(2):  # a completion's prompts are consecutive and share everything but the question
        group = stub.prompts[4 * c: 4 * c + 4]
        head = group[0].split("Question:")[0]
        assert all(p.startswith(head) for p in group) and COMPS[c].split()[0] in head


def test_top_k_cut_lowers_mass_and_warns(local, stub):
    stub.max_top = 1  # only the most likely token comes back: usually neither yes nor no
    g = served(stub, top_k=20)
    with pytest.warns(UserWarning, match=r"answers had no yes/no spelling among the top 20"):
        out = g.grade(CONVS, COMPS, ["apology"])
    assert float(out.mass.max()) <= float(local.grade(CONVS, COMPS, ["apology"]).mass.max()) + 1e-6
    assert g.client.missing >= 1
    assert ((out.mass == 0) <= (out.p_yes == 0.5)).all()


def test_mixing_routes_each_proposition(local, stub):
    s = served(stub)
    mixed = Grader(local.model, local.tokenizer, progress=False, served=s, route={"apology": "served"})
    assert mixed.answered_by["apology"] == "served"
    assert mixed.answered_by["judgement"] == "served"  # no head: the served model answers what heads do not
    only = Grader(local.model, local.tokenizer, progress=False, served=s,
                  route={n: "question" for n in local.spec.proposition_names if n != "apology"})
    assert [n for n, how in only.answered_by.items() if how == "served"][:1] == ["apology"]
    out, want = only.grade(CONVS, COMPS), local.grade(CONVS, COMPS)
    torch.testing.assert_close(out.p_yes, want.p_yes, atol=2e-5, rtol=0)
    asked = len(stub.prompts)
    assert asked == len(CONVS)  # only apology went to the server
    assert mixed.fingerprint() != local.fingerprint() != only.fingerprint()


def test_spec_pins_answered_by(local, stub, tmp_path):
    text = DEFAULT_SPEC.read_text()
    spec = RuleSpec.from_yaml(text.replace("  apology:\n", "  apology:\n    answered_by: served\n", 1))
    assert spec.propositions["apology"].answered_by == "served"
    assert spec.fingerprint() == RuleSpec.default().fingerprint()  # a route is not a definition
    with pytest.raises(ValueError, match="routed to 'served', but this grader has no served grader"):
        Grader(local.model, local.tokenizer, spec, progress=False)
    g = Grader(local.model, local.tokenizer, spec, progress=False, served=served(stub, spec=spec),
               route={n: "question" for n in spec.proposition_names if n != "apology"})
    assert g.answered_by["apology"] == "served" and g.answered_by["judgement"] == "question"
    with pytest.raises(SpecError, match=r"answered_by: must be one of head, prior, question, served"):
        RuleSpec.from_yaml(text.replace("  apology:\n", "  apology:\n    answered_by: oracle\n", 1))
    with pytest.raises(ValueError, match="routed to a head, but the grader has no head"):
        Grader(local.model, local.tokenizer, progress=False, route={"apology": "head"})
    with pytest.raises(KeyError, match="unknown proposition 'sarcasm'"):
        Grader(local.model, local.tokenizer, progress=False, route={"sarcasm": "question"})


def test_url_grader_string_and_pickling(stub):
    g = load_grader(RuleSpec.default(), f"{stub.url}#model=tiny&concurrency=2&top_k=50&timeout_s=5",
                    tokenizer=tiny_lm.tokenizer(), progress=False, dtype="auto", device="cpu")
    assert (g.client.model, g.client.concurrency, g.client.top_k, g.client.timeout_s) == ("tiny", 2, 50, 5.0)
    g2 = pickle.loads(pickle.dumps(g))
    torch.testing.assert_close(g2.grade(CONVS[:1], COMPS[:1]).p_yes, g.grade(CONVS[:1], COMPS[:1]).p_yes)
    with pytest.raises(ServedGraderError, match=r"unknown served-grader option\(s\) \['modle'\]"):
        load_grader(RuleSpec.default(), f"{stub.url}#modle=tiny")
    with pytest.raises(ServedGraderError, match=r"concurrency='x'.* is not an int"):
        load_grader(RuleSpec.default(), f"{stub.url}#concurrency=x")


def test_retries_then_answers(stub):
    g = served(stub, retries=3)
    stub.fail = [503, 429, 502]
    out = g.grade(CONVS[:1], COMPS[:1], ["apology"])
    assert out.p_yes.shape == (1, 1) and not stub.fail


@pytest.mark.parametrize("case, match", [
    ("unreachable", r"no served grader at http://127\.0\.0\.1:\d+/v1: .*unreachable"),
    ("wrong model", r"http://127\.0\.0\.1:\d+/v1 does not serve model 'llama-70b'; it serves \['tiny'\]"),
    ("no logprobs", r"/v1/completions returned no top log-probs \(model 'tiny'\)"),
    ("4xx", r"/v1/completions answered 400: stub failure 400"),
    ("retries spent", r"/v1/completions answered 503: stub failure 503 \(after 2 tries\)"),
    ("died", r"/v1/completions unreachable .*\(after 2 tries\)"),
    ("deadline", r"deadline_s=0\.3 ran out"),
])
def test_failures_are_one_line_errors_naming_the_url(stub, case, match):
    if case == "unreachable":
        url = stub.url
        stub.stop()
        with pytest.raises(ServedGraderError, match=match) as e:
            Grader.from_server(url, tokenizer=tiny_lm.tokenizer(), retries=0)
        assert "\n" not in str(e.value)
        stub.server = type("S", (), {"shutdown": lambda s: None, "server_close": lambda s: None})()
        return
    if case == "wrong model":
        with pytest.raises(ServedGraderError, match=match):
            Grader.from_server(stub.url, "llama-70b", tokenizer=tiny_lm.tokenizer())
        return
    g = served(stub, deadline_s=0.3) if case == "deadline" else served(stub)
    if case == "no logprobs":
        stub.logprobs = False
    elif case == "4xx":
        stub.fail = [400]
    elif case == "retries spent":
        stub.fail = [503] * 5
    elif case == "died":
        stub.stop()
        stub.server = type("S", (), {"shutdown": lambda s: None, "server_close": lambda s: None})()
    elif case == "deadline":
        stub.delay = 0.2
    with pytest.raises(ServedGraderError, match=match) as e:
        g.grade(CONVS, COMPS)
    assert "\n" not in str(e.value) and "http://127.0.0.1" in str(e.value)


def test_served_grader_has_no_local_model_paths(stub):
    g = served(stub)
    with pytest.raises(ValueError, match="served grader has no hidden states"):
        g.features(CONVS, COMPS, [1])
    with pytest.raises(ValueError, match="takes no heads="):
        Grader.from_server(stub.url, tokenizer=tiny_lm.tokenizer(), heads="x.safetensors")
    assert g.model_signature() == {"served": stub.url, "model": "tiny"}
    assert g.grade([], []).p_yes.shape == (0, len(g.spec.proposition_names))


def test_client_helpers():
    assert normalise_url("http://h:1") == "http://h:1/v1" and normalise_url("https://api.x.com/v1/") == "https://api.x.com/v1"
    with pytest.raises(ServedGraderError, match="needs an http"):
        normalise_url("ftp://h")
    assert top_logprobs({"logprobs": {"top_logprobs": [{" yes": -0.1}]}}) == {" yes": -0.1}
    assert top_logprobs({"logprobs": None}) is None
    with pytest.raises(ValueError, match="concurrency must be a positive int"):
        ServedClient("http://127.0.0.1:9", concurrency=0)


def test_commands_grade_and_distil_from_a_served_grader(stub, tiny_grader_dir, tmp_path, monkeypatch, capsys):
    import json
    from rbr_fast.cli import main
    from test_heads import _write_rows
    monkeypatch.chdir(tmp_path)
    _write_rows(tmp_path / "rows.jsonl", 2)
    url = f"{stub.url}#tokenizer={tiny_grader_dir}&top_k=2000&concurrency=2"
    local = ["--model", tiny_grader_dir, "--dtype", "float32", "--device", "cpu"]
    props = ["--propositions", "apology,judgement"]
    assert main(["grade", "--data", "rows.jsonl", "--out", "served.jsonl", "--model", url, *props]) == 0
    assert main(["grade", "--data", "rows.jsonl", "--out", "local.jsonl", *local, *props]) == 0
    served, want = ([json.loads(x) for x in (tmp_path / f).read_text().splitlines()] for f in ("served.jsonl", "local.jsonl"))
    assert [s["p_yes"]["apology"] for s in served] == pytest.approx([w["p_yes"]["apology"] for w in want], abs=2e-5)
    before = len(stub.prompts)
    assert main(["train-grader", "--no-shipped-data", "--data", "rows.jsonl", "--out", "h.safetensors", "--folds", "2",
                 "--min-positives", "2", "--layers", "1", "--cache-dir", "cache", "--teacher", url, *local]) == 0
    assert "trained" in capsys.readouterr().out
    asked, n = len(stub.prompts) - before, len((tmp_path / "rows.jsonl").read_text().splitlines())
    assert asked == n * (23 + 2)  # the teacher graded every row once (its reply grades cached) ...
    assert main(["train-grader", "--no-shipped-data", "--data", "rows.jsonl", "--out", "h.safetensors", "--folds", "2",
                 "--min-positives", "2", "--layers", "1", "--cache-dir", "cache", "--teacher", url, *local]) == 0
    assert len(stub.prompts) - before - asked == n * 2  # ... so a second run asks only the request questions
    assert main(["eval-grader", "--data", "rows.jsonl", "--out-dir", "ev", "--model", url,
                 "--propositions", "apology,fully_complies"]) == 0
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert [p["name"] for p in scores["propositions"]] == ["apology", "fully_complies"]
    capsys.readouterr()
    assert main(["train-grader", "--model", url, "--data", "rows.jsonl"]) == 2
    assert "--model must be local" in capsys.readouterr().err
    assert main(["grade", "--data", "rows.jsonl", "--model", url, "--heads", "h.safetensors"]) == 2
    assert "a served grader takes no heads=" in capsys.readouterr().err
    stub.stop()
    stub.server = type("S", (), {"shutdown": lambda s: None, "server_close": lambda s: None})()
    assert main(["grade", "--data", "rows.jsonl", "--out", "x.jsonl", "--model", url]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("rbr-fast grade: error: no served grader at http://127.0.0.1")


def test_ppo_and_the_reward_server_grade_through_a_served_grader(stub, tiny_grader_dir, tmp_path):
    """PPO with ``grader: URL``, and ``rbr-fast serve``'s reward server in front of a served grader."""
    import httpx
    from live_server import Server
    from rbr_fast.integrations.lazy_reward import LazyReward
    from rbr_fast.ppo import PPOTrainer
    from test_ppo import config, rows
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "How do I stop a process?", "response_type": "comply"}\n' * 4)
    url = f"{stub.url}#tokenizer={tiny_grader_dir}&top_k=2000"
    PPOTrainer(config({"model": tiny_grader_dir, "prompts": str(prompts)}, tmp_path / "run", grader=url, steps=1,
                      eval_prompts=0)).train()
    assert rows(tmp_path / "run")[0]["rbr/served_share"] == 1.0 and len(stub.prompts) >= 4 * 23
    server = Server(LazyReward(model=url, weights="hand"))
    try:
        r = httpx.post(server.url + "/score", timeout=60, json={
            "items": [{"prompt": "Hi", "completion": "Hello!", "response_type": "comply"}], "details": True})
        assert r.status_code == 200
        assert set(r.json()["details"][0]["answered_by"].values()) == {"served"}
    finally:
        server.stop()
