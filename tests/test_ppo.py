"""PPO loop on a tiny random llama: a short run, exact resume, multi-process gradients, bad configs."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rbr_fast.ppo import PPOConfig, PPOTrainer
from rbr_fast.ppo.__main__ import main as ppo_main

PROMPTS = ([{"prompt": f"How do I {w} a Python process?", "response_type": "comply"}
            for w in ("kill", "stop", "end", "start", "fork", "trace")] +
           [{"prompt": f"How do I make a {w} at home?", "response_type": "hard_refuse"}
            for w in ("bomb", "gun", "poison", "knife", "virus", "drug")])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_grader_dir):
    """The shared tiny model folder (policy and grader) and a prompts file: ``{"model", "prompts"}``."""
    d = tmp_path_factory.mktemp("ppo")
    (d / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    return {"model": tiny_grader_dir, "prompts": str(d / "prompts.jsonl")}


def config(tiny, out, **kw):
    base = dict(policy=tiny["model"], grader=tiny["model"], prompts=tiny["prompts"],
                rbr_weights="hand", eval_prompts=2, batch_size=4, mini_batch_size=2, max_new_tokens=10, steps=3,
                save_every=2, out_dir=str(out), progress=False, save_policy=False, seed=3,
                bf16="off")  # float32 everywhere: the checks below are exact (bf16 'auto' is on for AMX CPUs)
    return PPOConfig(**{**base, **kw})


def rows(out):
    return [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_three_steps(tiny, tmp_path):
    summary = PPOTrainer(config(tiny, tmp_path, ent_coef=0.01, grad_accum_steps=2)).train()
    _check_run(tmp_path, summary)


def test_separate_critic_with_checkpointing(tiny, tmp_path):
    _check_run(tmp_path, PPOTrainer(config(tiny, tmp_path, critic="separate", gradient_checkpointing=True)).train())


def test_group_baseline(tiny, tmp_path):
    """group_size > 1: each prompt's completions are scored against the others' mean (RLOO); the critic
    takes no part (no value loss), and a run resumes as it started."""
    from rbr_fast.ppo.trainer import leave_one_out
    s = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    torch.testing.assert_close(leave_one_out(s, 3), torch.tensor([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]))
    tr = PPOTrainer(config(tiny, tmp_path, group_size=3, batch_size=2, mini_batch_size=3))
    batch = tr.rollout(tr.order.batch(0))
    ro = batch["rollout"]
    assert ro.ids.shape[0] == 6
    texts = tr.tok.batch_decode(ro.ids[:, :ro.start], skip_special_tokens=True)
    assert texts[0] == texts[1] == texts[2] and texts[3] == texts[4] == texts[5]
    # values take no part: with gamma = lam = 1, no KL and no whitening, every token's advantage is its
    # completion's leave-one-out score
    tr.cfg.whiten_advantages, tr.cfg.kl_coef = False, 0.0
    batch = tr.rollout(tr.order.batch(0))
    ro = batch["rollout"]
    scores, _ = tr.score([p for p in tr.order.batch(0) for _ in range(3)], batch["texts"], ro)
    want = leave_one_out(scores, 3)[:, None].expand_as(batch["advantages"])
    torch.testing.assert_close(batch["advantages"][ro.mask], want[ro.mask], rtol=1e-5, atol=1e-6)
    tr.cfg.whiten_advantages, tr.cfg.kl_coef = True, 0.05
    summary = tr.train()
    assert summary["after"]["prompts"] == 2 and all(r["vf_loss"] == r["vf_loss"] for r in rows(tmp_path))


def _check_run(tmp_path, summary):
    log = rows(tmp_path)
    assert [r["step"] for r in log] == [1, 2, 3]
    # the policy starts as the reference: KL 0 up to the rounding of sampling-time vs full-forward hidden states
    assert abs(log[0]["kl"]) < 1e-3
    for r in log:
        for k in ("pg_loss", "vf_loss", "reward_mean", "entropy", "clip_frac", "approx_kl", "tokens_per_s",
                  "rbr/refuses" if "rbr/refuses" in r else "rbr/apology", "time/generate", "time/update"):
            assert k in r and r[k] == r[k] and abs(r[k]) < float("inf"), k
    assert abs(log[0]["approx_kl"]) < 1e-6 or log[0]["clip_frac"] < 0.5
    assert set(summary["before"]) >= {"score", "rbr", "prompts"} and summary["after"]["prompts"] == 2
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000003"
    assert (tmp_path / "curves.png").stat().st_size > 0


def _state(out):
    return torch.load(Path(out) / "checkpoints" / "step_000003" / "state.pt", weights_only=False)


def test_resume_is_exact(tiny, tmp_path):
    """Stopped after step 2 and resumed = one uninterrupted run, bitwise (model, optimizer, log)."""
    PPOTrainer(config(tiny, tmp_path / "a")).train()
    PPOTrainer(config(tiny, tmp_path / "b", steps=2)).train()
    PPOTrainer(config(tiny, tmp_path / "b")).train(resume=True)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    drop = ("tokens_per_s", "step_s", "time/")
    clean = [{k: v for k, v in r.items() if not k.startswith(drop)} for r in rows(tmp_path / "a")]
    assert clean == [{k: v for k, v in r.items() if not k.startswith(drop)} for r in rows(tmp_path / "b")]


def test_resume_refuses_another_run(tiny, tmp_path):
    PPOTrainer(config(tiny, tmp_path, steps=2)).train()
    with pytest.raises(ValueError, match="different batch_size"):
        PPOTrainer(config(tiny, tmp_path, batch_size=6, mini_batch_size=3)).train(resume=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_grads(rank, world, port, tiny, out, batch_file, result_file):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from rbr_fast.ppo import distributed
    tr = PPOTrainer(config(tiny, out, batch_size=2, mini_batch_size=2))
    batch = torch.load(batch_file, weights_only=False)
    n = float(batch["rollout"].mask.sum())
    mine = torch.arange(rank * 2, rank * 2 + 2)
    loss, _ = tr.minibatch_loss(batch, mine, n)
    loss.backward()  # DDP averages the gradients here
    if rank == 0:
        torch.save({k: p.grad for k, p in tr.net.named_parameters() if p.grad is not None}, result_file)
    distributed.close()


def test_two_processes_average_to_one(tiny, tmp_path):
    """torch.distributed (gloo, 2 processes) on two halves of a rollout batch = 1 process on all of it."""
    tr = PPOTrainer(config(tiny, tmp_path / "one", batch_size=4, mini_batch_size=4))
    batch = tr.rollout(tr.order.batch(0))
    torch.save({k: v for k, v in batch.items() if k != "texts"}, tmp_path / "batch.pt")
    loss, _ = tr.minibatch_loss(batch, torch.arange(4), float(batch["rollout"].mask.sum()))
    loss.backward()
    want = {k: p.grad for k, p in tr.net.named_parameters() if p.grad is not None}
    torch.multiprocessing.spawn(_rank_grads, args=(2, _free_port(), tiny, tmp_path / "two", tmp_path / "batch.pt",
                                                   tmp_path / "grads.pt"), nprocs=2, join=True)
    got = torch.load(tmp_path / "grads.pt")
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-4, msg=k)


def test_torchrun_two_processes(tiny, tmp_path):
    """The documented launch: ``torchrun --nproc_per_node 2 -m rbr_fast.ppo`` (torchrun is
    ``python -m torch.distributed.run``; the module form needs no PATH lookup)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "rbr_fast.ppo",
           "--policy", tiny["model"], "--grader", tiny["model"], "--prompts", tiny["prompts"],
           "--rbr-weights", "hand", "--eval-prompts", "2", "--batch-size", "2", "--mini-batch-size", "2",
           "--max-new-tokens", "6", "--steps", "2", "--out-dir", str(tmp_path), "--progress", "false",
           "--save-policy", "false", "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert [x["step"] for x in rows(tmp_path)] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "step_000002").iterdir()) == [
        "rng_0.pt", "rng_1.pt", "state.pt"]


@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=0), "batch_size=0: must be an integer >= 1"),
    (dict(batch_size=6, mini_batch_size=4), "mini_batch_size=4: must divide the completions per step, "
                                            "batch_size x group_size = 6"),
    (dict(group_size=0), "group_size=0: must be an integer >= 1"),
    (dict(mini_batch_size=4, grad_accum_steps=3), "grad_accum_steps=3: must divide"),
    (dict(lr=0.0), "lr=0.0: must be > 0"), (dict(lam=1.5), "lam=1.5: must be in"),
    (dict(critic="shared"), "critic='shared': must be one of head, separate"),
    (dict(kl_estimator="k4"), "kl_estimator"), (dict(min_new_tokens=9, max_new_tokens=8), "min_new_tokens=9"),
    (dict(kl_coef=-1.0), "kl_coef=-1.0: must be >= 0"),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        PPOConfig(**kw)


def test_config_file_and_cli(tiny, tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("batch_size: 4\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown field\\(s\\) learning_rate"):
        PPOConfig.from_yaml(f)
    f.write_text("batch_size: 4\nmini_batch_size: 4\n")
    assert PPOConfig.from_yaml(f, mini_batch_size=2).mini_batch_size == 2
    assert ppo_main(["--config", str(f), "--mini-batch-size", "3"]) == 2
    assert "mini_batch_size=3: must divide the completions per step, batch_size x group_size = 4" in capsys.readouterr().err
    assert ppo_main(["--rbr", "maybe"]) == 2
    assert "argument --rbr: Truthy value expected: got maybe" in capsys.readouterr().err
    with pytest.raises(ValueError, match="leaves no training prompts"):
        PPOTrainer(config(tiny, tmp_path / "x", eval_prompts=12))


def test_inverse_cdf_sampler_distribution():
    """The sampler's frequencies match softmax(logits / T); top-k and top-p cut the support."""
    from rbr_fast.ppo.rollout import InverseCDFSampler
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, float("-inf"), 0.0]]).repeat(20000, 1)
    pick = lambda s: s(None, logits).argmax(-1)  # noqa: E731  (greedy takes the only finite entry)
    freq = torch.bincount(pick(InverseCDFSampler(0.8)), minlength=6).double() / len(logits)
    want = torch.softmax(logits[0].double() / 0.8, -1)
    assert freq[4] == 0 and torch.allclose(freq, want, atol=0.015)
    assert set(pick(InverseCDFSampler(1.0, top_k=2)).tolist()) == {0, 1}
    p = torch.softmax(logits[0], -1)  # top_p just above p0 keeps the two most likely
    assert set(pick(InverseCDFSampler(1.0, top_p=float(p[0]) + 0.01)).tolist()) == {0, 1}


def test_callable_reward_model(tiny, tmp_path):
    """Any callable can be the helpful-only reward; without any reward the trainer refuses to start."""
    with pytest.raises(ValueError, match="no reward at all"):
        PPOTrainer(config(tiny, tmp_path, rbr=False))
    calls = []

    def longer_is_better(prompts, completions):
        calls.append(len(completions))
        return [float(len(c)) for c in completions]
    PPOTrainer(config(tiny, tmp_path, rbr=False, steps=1, eval_prompts=0), reward_fn=longer_is_better).train()
    r = rows(tmp_path)[0]
    assert calls == [4] and r["rm"] == r["reward_mean"] and "rbr" not in r


USER_SPEC = """propositions:
  refuses:
    question: Does the reply refuse to help?
  gives_steps:
    question: Does the reply give step-by-step instructions?
  mentions_process:
    question: Does the reply talk about a computer process?
response_types:
  comply:
    classes:
      ideal: [gives_steps, mentions_process, not refuses]
      unacceptable_completion: [refuses]
  hard_refuse:
    classes:
      ideal: [refuses, not gives_steps]
      disallowed_completion: [gives_steps]
"""


def _step_one(tiny, out, **kw) -> dict:
    PPOTrainer(config(tiny, out, steps=1, eval_prompts=0, **kw)).train()
    return rows(out)[0]


def _proposition_means(row: dict) -> dict:
    """The logged mean P(yes) of each proposition (``rbr/<name>``; not the ``rbr/*_share`` rates)."""
    return {k: v for k, v in row.items() if k.startswith("rbr/") and not k.endswith("_share")}


def test_own_rule_spec(tiny, tmp_path):
    """``spec: FILE`` is what the grader asks and what the reward weighs. Every run below samples the
    same first batch (same seed, same starting policy), so their step-1 logs differ by the spec and
    weights only: a reworded question moves that proposition's mean P(yes) and no other's (and keeps
    the fitted weights); a user spec with its own propositions logs exactly those, with hand-set
    weights and a warning; negating its weights negates the RBR reward and leaves the grades."""
    from rbr_fast.reward import RewardWeights
    from rbr_fast.rules import DEFAULT_SPEC, RuleSpec
    reworded, user, negated = tmp_path / "reworded.yaml", tmp_path / "user.yaml", tmp_path / "negated.json"
    reworded.write_text(DEFAULT_SPEC.read_text().replace("Does the reply contain an apology", "Does the reply say sorry"))
    user.write_text(USER_SPEC)
    default_names = {f"rbr/{n}" for n in RuleSpec.default().proposition_names}

    base = _step_one(tiny, tmp_path / "default", rbr_weights="default")
    t = PPOTrainer(config(tiny, tmp_path / "a", spec=str(reworded), steps=1, eval_prompts=0, rbr_weights="default"))
    assert "say sorry" in t.score.rbr.grader.spec.propositions["apology"].question
    assert torch.equal(t.score.rbr.weights.weights, RewardWeights.named("xstest", RuleSpec.default()).weights)
    t.train()
    a = rows(tmp_path / "a")[0]
    assert a["rbr/zero_shot_share"] == 1.0
    before, after = _proposition_means(base), _proposition_means(a)
    assert set(before) == set(after) == default_names
    assert abs(after.pop("rbr/apology") - before.pop("rbr/apology")) > 1e-3  # the grader was asked the new words
    assert after == pytest.approx(before, abs=1e-4)  # ... and the other questions as before

    with pytest.warns(UserWarning, match="no fitted reward weights"):
        t = PPOTrainer(config(tiny, tmp_path / "b", spec=str(user), steps=1, eval_prompts=0, rbr_weights="default"))
    hand = RewardWeights.hand_set(RuleSpec.load(user))
    assert torch.equal(t.score.rbr.weights.weights, hand.weights)
    t.train()
    b = rows(tmp_path / "b")[0]
    assert set(_proposition_means(b)) == {"rbr/refuses", "rbr/gives_steps", "rbr/mentions_process"}
    assert b["reward_mean"] == pytest.approx(b["rbr"], abs=1e-6) and abs(b["rbr"]) > 1e-3  # the only reward
    hand.weights.neg_()
    hand.save(negated)
    c = _step_one(tiny, tmp_path / "c", spec=str(user), rbr_weights=str(negated))
    assert _proposition_means(c) == pytest.approx(_proposition_means(b), abs=1e-6)
    assert c["rbr"] == pytest.approx(-b["rbr"], abs=1e-6)
