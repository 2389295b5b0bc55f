"""PPO step throughput and peak memory: rbr_fast.ppo against TRL's PPOTrainer, same configuration.

    python benchmarks/ppo_vs_trl.py [--steps 2] [--batch 8] [--response 32] [--epochs 1] [--trl-python PY]

Both sides: the embedded SmolLM2-135M-Instruct as policy and reference, a value network with its own
copy of the backbone (TRL's only layout; ours also runs with a value head on the policy, ``critic=head``),
a sequence-classifier reward model from the same weights (TRL's PPOTrainer only takes an ``nn.Module``
reward model, so the RBR reward is off on both sides), the same XSTest prompts, batch, mini-batch,
exactly ``--response`` generated tokens (min_new_tokens = max_new_tokens), PPO epochs, fp32, CPU.
Each configuration runs in its own process (peak RSS is per process). TRL no longer ships PPO
(trl >= 1.0 removed it), so it runs from the newest release that has it, in its own environment
(``benchmarks/setup_trl_ppo_venv.sh``); without it the TRL column says why.

Reported: response tokens per second (batch x response length / median timed step), peak RSS, the
time split, ratios, and the FLOP floor (2 x params x tokens per forward, 6x per trained token, at the
measured fp32 matmul peak).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TRL_PY = HERE.parent / ".venv-trlppo" / "bin" / "python"


def prompts(n: int) -> list[str]:
    from rbr_fast.evaluation import xstest
    rows = xstest.prompt_rows()
    return [rows[k]["prompt"] for k in sorted(rows, key=int)[:n]]


def run_ours(c: dict) -> dict:
    """One configuration of rbr_fast.ppo in this process (called in a child process)."""
    import tempfile

    import torch

    from rbr_fast.grading import embedded
    from rbr_fast.ppo import PHASES, PPOConfig, PPOTrainer
    from rbr_fast.ppo.trainer import PhaseTimer
    torch.set_num_threads(c["threads"])
    d = Path(tempfile.mkdtemp())
    (d / "p.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in c["prompts"]))
    path = str(embedded.path())
    cfg = PPOConfig(policy=path, critic=c["critic"], rbr=False, reward_model=path, prompts=str(d / "p.jsonl"),
                    eval_prompts=0, batch_size=c["batch_size"], mini_batch_size=c["mini_batch_size"],
                    ppo_epochs=c["ppo_epochs"], max_new_tokens=c["response_length"],
                    min_new_tokens=c["response_length"], temperature=c["temperature"], kl_coef=c["kl_coef"],
                    lr=c["lr"], seed=c["seed"], out_dir=str(d / "out"), progress=False, save_policy=False)
    torch.manual_seed(c["seed"])
    tr = PPOTrainer(cfg)
    times, phases = [], []
    for step in range(c["warmup_steps"] + c["steps"]):
        timer = PhaseTimer()
        t0 = time.perf_counter()
        batch = tr.rollout(tr.order.batch(step), timer)
        tr.update(batch, timer)
        tr.step += 1
        if step >= c["warmup_steps"]:
            times.append(time.perf_counter() - t0)
            phases.append(timer.t)
    med = statistics.median(times)
    return {"step_seconds": times, "tokens_per_s": c["batch_size"] * c["response_length"] / med,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "phases": {k: sum(p.get(k, 0.0) for p in phases) / len(phases) for k in PHASES},
            "params": sum(p.numel() for p in tr.net.policy.parameters())}


def child(args: list[str]) -> dict:
    r = subprocess.run(args, capture_output=True, text=True)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or not lines:
        return {"error": (r.stderr or r.stdout).strip().splitlines()[-1][:300] if (r.stderr or r.stdout) else "no output"}
    return json.loads(lines[-1])


def floor_s(c: dict, params: int, critic: str, peak_flops: float) -> float:
    """FLOP floor of one step: generation, rollout forwards (reference, reward model, value network if
    separate; the policy's own log-probs come from sampling on both sides) and ppo_epochs x (forward +
    backward) of the policy (and value network)."""
    B, R, P = c["batch_size"], c["response_length"], c["prompt_tokens"]
    T = P + R
    nets = 2 if critic == "separate" else 1
    flops = 2 * params * B * R  # generation (KV cache: one token per position)
    flops += 2 * params * B * T * (1 + nets)  # rollout forwards: reference, RM (+ value)
    flops += c["ppo_epochs"] * 6 * params * B * T * nets
    return flops / peak_flops


def matmul_peak() -> float:
    import torch
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048 ** 3 / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2, help="timed PPO steps (after one warm-up step)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mini-batch", type=int, default=4)
    p.add_argument("--response", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--critic", default="separate,head", help="our value-network layouts to run")
    p.add_argument("--no-trl", action="store_true", help="skip TRL (only our rows)")
    p.add_argument("--trl-python", default=os.environ.get("RBR_FAST_TRL_PPO_PYTHON", str(DEFAULT_TRL_PY)),
                   help="python of an environment with a trl release that has PPOTrainer")
    p.add_argument("--out", default="bench_results/ppo_vs_trl.json")
    p.add_argument("--_ours", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._ours:
        print(json.dumps(run_ours(json.loads(a._ours))))
        return 0
    from rbr_fast.grading import embedded
    c = {"model": str(embedded.path()), "prompts": prompts(4 * a.batch), "batch_size": a.batch,
         "mini_batch_size": a.mini_batch, "ppo_epochs": a.epochs, "response_length": a.response, "temperature": 0.7,
         "kl_coef": 0.05, "lr": 3e-6, "steps": a.steps, "warmup_steps": 1, "seed": 0, "threads": a.threads}
    results = {}
    for critic in a.critic.split(","):
        print(f"rbr_fast.ppo critic={critic} ...", flush=True)
        results[f"rbr_fast ({critic})"] = child([sys.executable, __file__, "--_ours", json.dumps({**c, "critic": critic})])
    trl_py = Path(a.trl_python)
    if a.no_trl:
        results["trl"] = {"error": "skipped (--no-trl)"}
    elif trl_py.is_file():
        print("TRL PPOTrainer ...", flush=True)
        results["trl"] = child([str(trl_py), str(HERE / "trl_ppo_peer.py"), "--config", json.dumps(c)])
    else:
        results["trl"] = {"error": f"no TRL PPO environment at {trl_py}: trl >= 1.0 removed PPOTrainer; run "
                                   "benchmarks/setup_trl_ppo_venv.sh (or set RBR_FAST_TRL_PPO_PYTHON)"}
    from transformers import AutoTokenizer

    from rbr_fast.ppo.rollout import encode_prompts
    c["prompt_tokens"] = encode_prompts(AutoTokenizer.from_pretrained(c["model"]), c["prompts"][:a.batch], 128,
                                        "cpu")[0].shape[1]  # the padded prompt block both sides compute on
    peak = matmul_peak()
    trl = results["trl"]
    phases = ("generate", "grade", "logprobs", "advantages", "update")
    print(f"\nPPO step, {a.batch} prompts x {a.response} tokens, {a.epochs} epoch(s), mini-batch {a.mini_batch}, "
          f"{a.threads} threads; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'':24s}{'tokens/s':>10s}{'vs TRL':>8s}{'peak RSS MB':>13s}{'vs TRL':>8s}{'floor s':>9s}{'step s':>8s}  time split")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:24s} not run: {r['error']}")
            continue
        crit = "head" if "head" in name else "separate"
        params = r.get("params") or next((x["params"] for x in results.values() if "params" in x), 0)
        fl = floor_s(c, params, crit, peak) if params else float("nan")
        ok = "error" not in trl
        ratio = f"{r['tokens_per_s'] / trl['tokens_per_s']:.2f}x" if ok else "-"
        mem = f"{r['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x" if ok else "-"
        split = ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items() if v)
        print(f"{name:24s}{r['tokens_per_s']:10.1f}{ratio:>8s}{r['peak_rss_mb']:13.0f}{mem:>8s}{fl:9.1f}"
              f"{statistics.median(r['step_seconds']):8.1f}  {split}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": {k: v for k, v in c.items() if k != "prompts"}, "results": results,
                               "matmul_peak_flops": peak, "phases": phases}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
